#!/usr/bin/env python
"""Figure 3: solver run time vs matrix size (ours exact / approx / LP and the peers), log-log.

    python paper_figs/fig3_solver_runtime.py [--quick] [--out DIR] [--from-bench PATH | --fresh]

Data source, in this order:

1. ``--from-bench PATH`` or ``bench/results/solvers.json`` when it exists (the output of
   ``python bench/solvers.py``; its ``results`` rows and, for ours, its ``scaling_size`` rows);
2. otherwise (or with ``--fresh``) a small sweep run here with the same bench
   (``bench/solvers.py`` in a subprocess, its output kept in ``<out>/fig3_bench/``):
   square Gaussian matrices 256..2048 for all methods, ours also at 4096.

Per-tile Python peers (OR-tools, networkx) and our LP run on a random sample of tiles and
their time is extrapolated to the whole matrix (hollow markers, dashed lines); the
others are timed on the full matrix (filled markers, solid lines). Times are medians
of the bench's repeats on this CPU; ours use all Numba threads, peers one thread.

Writes ``fig3_solver_runtime.png``, ``.csv`` (one row per point) and ``.json``
(points, source, machine of the bench run).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _common import plt  # noqa: E402

NAME = "fig3_solver_runtime"
BENCH_JSON = C.ROOT / "bench" / "results" / "solvers.json"
LABELS = {
    "ours:exact": "ours exact (min-cost flow, Numba)",
    "ours:approx": "ours 2-approx (Numba)",
    "ours:lp": "ours LP reference (pulp)",
    "ortools": "OR-tools min-cost flow / tile",
    "networkx": "networkx min-cost flow / tile",
    "numpy_greedy": "greedy 2-approx (numpy)",
    "sinkhorn": "entropic OT + rounding (numpy)",
}
MARKERS = {"ours:exact": "o", "ours:approx": "s", "ours:lp": "P", "ortools": "D", "networkx": "v",
           "numpy_greedy": "^", "sinkhorn": "X"}


def run_bench(out: Path, quick: bool) -> Path:
    """Run bench/solvers.py on a reduced grid; return the path of its solvers.json."""
    dest = out / "fig3_bench"
    if quick:
        extra = ["--quick", "--no-scaling", "--patterns", "2:4", "--dists", "gaussian",
                 "--peers", "ortools,numpy_greedy,sinkhorn", "--sample-seconds", "0.05", "--max-sample-tiles", "16",
                 "--methods", "exact,approx"]
    else:
        extra = ["--sizes", "256,512,1024,2048", "--patterns", "2:4,4:8,8:16", "--dists", "gaussian",
                 "--scaling-sizes", "4096", "--thread-size", "4096", "--thread-list", "64",
                 "--repeats", "1", "--sample-seconds", "0.3", "--max-sample-tiles", "256"]
    cmd = [sys.executable, str(C.ROOT / "bench" / "solvers.py"), *extra, "--out", str(dest)]
    print("running:", " ".join(cmd[1:]), flush=True)
    env = dict(os.environ)
    if not C.OMP_WAIT_POLICY_WAS_SET:  # time the solvers as bench/solvers.py normally runs
        env.pop("OMP_WAIT_POLICY", None)
    proc = subprocess.run(cmd, cwd=C.ROOT, capture_output=True, text=True, env=env)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "bench.log").write_text(proc.stdout + proc.stderr)
    if not (dest / "solvers.json").exists():
        raise RuntimeError(f"bench/solvers.py failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return dest / "solvers.json"


def points_from(report: dict) -> list[dict]:
    """Plot points from a solvers.json report: (pattern, method, size, seconds, extrapolated)."""
    pts = {}
    for r in report.get("results", []):
        if "error" in r or r.get("time_s") is None or r.get("dist", "gaussian") != "gaussian":
            continue
        key = (r["pattern"], r["method"], int(r["size"]))
        pts[key] = {"pattern": r["pattern"], "method": r["method"], "size": int(r["size"]), "time_s": r["time_s"],
                    "extrapolated": not str(r.get("timing", "")).startswith("full"),
                    "timing": r.get("timing"), "valid": r.get("valid"),
                    "l1_over_opt": r.get("l1_over_opt")}
    for r in report.get("scaling_size", []):
        key = (r["pattern"], r["method"], int(r["size"]))
        if key not in pts:
            pts[key] = {"pattern": r["pattern"], "method": r["method"], "size": int(r["size"]),
                        "time_s": r["time_s"], "extrapolated": False, "timing": "full matrix (scaling run)",
                        "valid": None, "l1_over_opt": None}
    return sorted(pts.values(), key=lambda p: (p["pattern"], p["method"], p["size"]))


def plot(points, meta, out):
    patterns = sorted({p["pattern"] for p in points}, key=lambda s: int(s.split(":")[1]))
    fig, axes = plt.subplots(1, len(patterns), figsize=(5.0 * len(patterns), 4.6), squeeze=False, sharey=True)
    for ax, pat in zip(axes[0], patterns):
        methods = [m for m in LABELS if any(p["method"] == m and p["pattern"] == pat for p in points)]
        for meth in methods:
            ps = [p for p in points if p["method"] == meth and p["pattern"] == pat]
            xs = [p["size"] for p in ps]
            ys = [p["time_s"] for p in ps]
            col = C.COLORS.get(meth, "k")
            ex = all(p["extrapolated"] for p in ps)
            ax.plot(xs, ys, ls="--" if ex else "-", color=col, lw=1.4)
            for p in ps:
                ax.plot(p["size"], p["time_s"], MARKERS.get(meth, "o"), color=col, ms=6,
                        mfc="white" if p["extrapolated"] else col)
            ax.plot([], [], MARKERS.get(meth, "o") + ("--" if ex else "-"), color=col,
                    mfc="white" if ex else col, label=LABELS.get(meth, meth) + (" (extrap.)" if ex else ""))
        sizes = sorted({p["size"] for p in points if p["pattern"] == pat})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{s}²" for s in sizes])
        ax.set_xlabel("matrix size (square, rows x cols)")
        ax.set_title(f"{pat} transposable mask")
        ax.minorticks_off()
    axes[0][0].set_ylabel("time to compute the mask (s, log scale)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0)
    fig.suptitle(f"Solver run time vs matrix size (Gaussian weights; {meta['where']})", fontsize=11)
    fig.text(0.01, -0.03, "Hollow markers / dashed lines: timed on a random sample of tiles and extrapolated to the "
             "whole matrix. Ours: all Numba threads; peers: one thread. Source: " + meta["source"]
             + (f" (load average during that run {meta['bench_machine']['loadavg_start'][0]:.1f} on "
                f"{meta['bench_machine'].get('usable_cpus', '?')} CPUs: shared machine, times inflated)"
                if meta["bench_machine"].get("loadavg_start") and meta["bench_machine"]["loadavg_start"][0] > 1.5 else ""),
             fontsize=8)
    fig.tight_layout()
    return C.save_fig(fig, out, NAME)


def main(argv=None) -> dict:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--from-bench", type=Path, default=None, help="a solvers.json written by bench/solvers.py")
    ap.add_argument("--fresh", action="store_true", help="ignore bench/results/solvers.json, run the small sweep")
    args = ap.parse_args(argv)
    out = C.out_dir(args)
    with C.Timer() as t:
        src = args.from_bench
        if src is None and not args.fresh and not args.quick and BENCH_JSON.exists():
            src = BENCH_JSON
        if src is None:
            src = run_bench(out, args.quick)
            source = f"small sweep by paper_figs ({'--quick' if args.quick else 'sizes 256-2048, ours also 4096'})"
        else:
            source = str(Path(src).resolve().relative_to(C.ROOT)) if Path(src).resolve().is_relative_to(C.ROOT) else str(src)
        report = json.loads(Path(src).read_text())
        points = points_from(report)
        if not points:
            raise RuntimeError(f"no timing rows in {src}")
        bm = report.get("machine", {})
        where = f"{bm.get('cpu', '?')}, {bm.get('usable_cpus', bm.get('logical_cpus', '?'))} CPUs, {bm.get('date', '?')[:10]}"
        meta = {"source": source, "where": where, "bench_machine": bm, "bench_config": report.get("config")}
        C.save_csv(points, out, NAME)
        C.save_json({"meta": meta, "points": points}, out, NAME)
        plot(points, meta, out)
    big = max(p["size"] for p in points)

    def at(method, pat, size):
        return next((p["time_s"] for p in points if p["method"] == method and p["pattern"] == pat and p["size"] == size), None)

    bits = []
    for pat in sorted({p["pattern"] for p in points}):
        s = max(p["size"] for p in points if p["pattern"] == pat and p["method"] in ("ortools", "ours:exact"))
        e, o, nx = at("ours:exact", pat, s), at("ortools", pat, s), at("networkx", pat, s)
        if e and o:
            bits.append(f"{pat} at {s}²: ours exact {e:.3g} s vs OR-tools {o:.3g} s"
                        + (f", networkx {nx:.3g} s" if nx else "") + f" ({o / e:.0f}x)")
    caption = (f"Solver run time vs matrix size, log-log, up to {big}² ({where}; source {source}). "
               + "; ".join(bits) + ".")
    print(caption)
    return C.result(NAME, out, caption, t.s)


if __name__ == "__main__":
    main()
