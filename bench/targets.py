#!/usr/bin/env python
"""Issue-17 speed targets of transmask, measured side by side in one run, and a profile of what limits them.

    python bench/targets.py           # 8192 x 8192 float32, 2 threads: writes bench/results/targets.{md,json}
    python bench/targets.py --quick   # 512 x 512, 128 x 128 small, no start-up: writes to a temp folder

Every target is one row of the printed table (target, measured, met), and of the JSON:

1. **Floor**: reading W once: ``sum |W|`` in blocks of rows (:func:`read_once`; median).
   The issue's ``np.abs(W).sum()`` also allocates and faults in a temporary as large
   as ``W`` (0.03-0.5 s here, depending on whether the allocator reuses memory): it is
   timed alongside for reference (``read_once_numpy``) but is not the floor.
2. **Side by side**: for 2:4, 4:8, 8:16, 16:32, each repeat times in turn the read,
   ``nm_mask``, ``optimal_mask`` exact with ``keep="exactly"`` and ``"at_most"`` and
   approx (``keep="exactly"``); medians. Targets: ``nm_mask`` <= 2x the read; exact
   ``exactly`` <= 0.25 / 0.40 / 0.50 / 1.0 s (scaled by the number of weights when
   ``--size`` is not 8192); ``at_most`` <= 1.3x ``exactly``; approx <= exact.
3. **Small matrices**: time per weight of ``--small`` x ``--small`` (576, a small
   model's layer) over the large matrix's, for exact and ``nm_mask`` (<= 1.5x): a
   fixed per-call cost would show here.
4. **Start-up**: ``python -m transmask.demo --no-lp`` (the main job as on the bare
   install, which has no pulp for the LP cross-check) in a fresh process with an empty Numba
   cache (a new ``NUMBA_CACHE_DIR``; <= 25 s, and the one-line compile notice on stderr)
   and again with that cache warm (<= 1 s). Skipped by ``--quick``.
5. **Memory**: peak extra resident memory of one call over the size of the mask it
   returns (<= 8 MB), in a fresh process.
6. **Profile** (``--no-profile`` skips it): where the time goes, in CPU seconds of
   one thread (least of the repeats) on a ``--profile-size`` matrix, scaled to the full size: the exact solver's own kernel
   stopped after each stage of its chunk loop (``transmask.solvers.exact.STAGES``), with
   augmenting paths per tile; ``keep="at_most"`` over ``"exactly"``; the approximation's
   greedy alone and with the fill.

Wall times on a shared machine are noisy: the load average is recorded at the start
and the end, and a full run meant for the README should be made on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import transmask as tm  # noqa: E402
from bench._machine import provenance, provenance_line, results_folder  # noqa: E402
from transmask.solvers import approx as approx_mod  # noqa: E402
from transmask.solvers import exact as exact_mod  # noqa: E402

PATTERNS = ((2, 4), (4, 8), (8, 16), (16, 32))
FULL_SIZE = 8192
EXACT_GOAL_S = {"2:4": 0.25, "4:8": 0.40, "8:16": 0.50, "16:32": 1.0}  # at 8192^2 float32, 2 threads
NM_GOAL_X_READ = 2.0
AT_MOST_GOAL_X = 1.3
APPROX_GOAL_X = 1.0
SMALL_GOAL_X = 1.5
COLD_GOAL_S = 25.0
WARM_GOAL_S = 1.0
MEMORY_GOAL_MB = 8.0  # extra over the mask
NOTICE_PREFIX = "transmask: compiling"


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(fn, repeats):
    """Fewest CPU seconds of the process over ``repeats`` calls (single-threaded profile: waits for the CPU on a
    shared machine do not count, work on other threads would)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def candidates(n, m):
    """What is timed side by side for one pattern: name -> call(W)."""
    return {
        "nm_mask": lambda W: tm.nm_mask(W, n, m),
        "exact": lambda W: tm.optimal_mask(W, n, m),
        "exact_at_most": lambda W: tm.optimal_mask(W, n, m, keep="at_most"),
        "approx": lambda W: tm.optimal_mask(W, n, m, method="approx"),
    }


def read_once(W, rows_per_block: int = 256) -> float:
    """``sum |W|``, reading ``W`` once in blocks of rows (temporaries of a few MB, in cache): the floor."""
    return float(sum(np.abs(W[i:i + rows_per_block]).sum(dtype=np.float64) for i in range(0, W.shape[0], rows_per_block)))


def side_by_side(W, repeats):
    """Median seconds of the read and of every candidate per pattern; each repeat runs all of them in turn."""
    read = lambda: read_once(W)  # noqa: E731
    read_numpy = lambda: np.abs(W).sum()  # noqa: E731
    runs = {"read_once": [], "read_once_numpy": []}
    for n, m in PATTERNS:
        for name, fn in candidates(n, m).items():
            fn(W[: 4 * m, : 4 * m])  # compile (or load) outside the timed calls
            fn(W)  # first touch of the output pages and work arrays
            runs[f"{name} {n}:{m}"] = []
    read()
    for r in range(repeats):
        runs["read_once"].append(_time(read))
        runs["read_once_numpy"].append(_time(read_numpy))
        for n, m in PATTERNS:
            for name, fn in candidates(n, m).items():
                runs[f"{name} {n}:{m}"].append(_time(lambda: fn(W)))
        print(f"  repeat {r + 1}/{repeats}: read {runs['read_once'][-1]:.3f} s "
              f"(np.abs(W).sum() {runs['read_once_numpy'][-1]:.3f} s), "
              + ", ".join(f"{k} {v[-1]:.3f}" for k, v in runs.items() if k.endswith("2:4")), flush=True)
    return {k: dict(median_s=statistics.median(v), runs_s=v) for k, v in runs.items()}


def small_rates(size, repeats, min_batch_s=0.2):
    """Seconds per call on a ``size x size`` float32 matrix (median over repeats of a batch of calls)."""
    W = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    out = {}
    for n, m in PATTERNS:
        for name in ("nm_mask", "exact"):
            fn = candidates(n, m)[name]
            fn(W)
            once = max(_time(lambda: fn(W)), 1e-6)
            batch = max(1, int(min_batch_s / once))
            per_call = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(batch):
                    fn(W)
                per_call.append((time.perf_counter() - t0) / batch)
            out[f"{name} {n}:{m}"] = dict(median_s=statistics.median(per_call), calls_per_batch=batch)
    return out


def profile(size, full_size, repeats):
    """Single-thread core-seconds by stage, measured on ``size``^2 and scaled to ``full_size``^2."""
    W = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    scale = (full_size / size) ** 2
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    out = []
    try:
        for n, m in PATTERNS[1:]:
            # the exact solver's own kernel, stopped after each stage of its chunk loop
            mask = np.empty(W.shape, dtype=bool)
            run = lambda last, rounds=exact_mod.DUAL_ROUNDS: exact_mod.run_flow_kernel(W, n, m, "exactly", mask, last_stage=last, rounds=rounds)  # noqa: E731
            cum = [best_of(lambda s=s: run(s), repeats) * scale for s in range(len(exact_mod.STAGES))]
            stats = run(exact_mod.STAGE_ROW_TOPN).sum(axis=0)
            tiles, repaired, paths = (int(stats[k]) for k in (exact_mod.STAT_TILES, exact_mod.STAT_REPAIRED, exact_mod.STAT_PATHS))
            row = dict(solver="exact (flow)", pattern=f"{n}:{m}")
            row.update({f"{name}_core_s": cum[k] - (cum[k - 1] if k else 0.0) for k, name in enumerate(exact_mod.STAGES)})
            row.update(paths_per_tile=paths / tiles, share_of_tiles_repaired=repaired / tiles,
                       us_per_path=(cum[exact_mod.STAGE_REPAIR] - cum[exact_mod.STAGE_ROW_TOPN]) / scale / max(paths, 1) * 1e6)
            out.append(row)
        out.append(dict(solver="exact (patterns)", pattern="2:4", total_core_s=best_of(lambda: exact_mod.solve(W, 2, 4, "exactly"), repeats) * scale))
        for n, m in PATTERNS:  # keep="at_most": tiles the exactly-n prices do not certify are re-solved by the at-most SSP
            e = best_of(lambda: exact_mod.solve(W, n, m, "exactly"), repeats) * scale
            a = best_of(lambda: exact_mod.solve(W, n, m, "at_most"), repeats) * scale
            out.append(dict(solver="exact at_most", pattern=f"{n}:{m}", exactly_core_s=e, at_most_core_s=a, extra_core_s=a - e))
        for n, m in PATTERNS:
            g = best_of(lambda: approx_mod.solve(W, n, m, "at_most"), repeats) * scale
            f = best_of(lambda: approx_mod.solve(W, n, m, "exactly"), repeats) * scale
            out.append(dict(solver="approx", pattern=f"{n}:{m}", greedy_core_s=g, fill_core_s=f - g))
    finally:
        numba.set_num_threads(before)
    return out


def startup(threads):
    """Wall time of ``python -m transmask.demo`` with an empty, then warm, Numba cache; notice lines on stderr."""
    res = {}
    with tempfile.TemporaryDirectory(prefix="transmask-numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS=str(threads))
        env.pop("NUMBA_DISABLE_JIT", None)
        for label in ("cold", "warm"):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "transmask.demo", "--no-lp"], env=env, cwd=tempfile.gettempdir(),
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise RuntimeError(f"python -m transmask.demo failed ({label} cache):\n{proc.stderr[-2000:]}")
            notices = [line for line in proc.stderr.splitlines() if line.startswith(NOTICE_PREFIX)]
            res[label] = dict(wall_s=wall, notice_lines=len(notices), notices=notices)
            print(f"  {label} cache: {wall:.1f} s, {len(notices)} compile notice line(s) on stderr", flush=True)
    return res


_MEMORY = """
import resource, sys, numpy as np, transmask as tm
size, what, n, m = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
W = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
call = {"nm_mask": lambda X: tm.nm_mask(X, n, m), "exact": lambda X: tm.optimal_mask(X, n, m),
        "exact_at_most": lambda X: tm.optimal_mask(X, n, m, keep="at_most"),
        "approx": lambda X: tm.optimal_mask(X, n, m, method="approx")}[what]
call(W[:512, :512])  # loads the kernels and starts the thread pool (the parallel paths need a large enough matrix)

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

try:  # reset the peak-RSS counter (Linux >= 4.0), so earlier temporaries do not hide this call
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    base = status('VmRSS')
    mask = call(W)
    extra = status('VmHWM') - base
except OSError:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mask = call(W)
    extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(extra, mask.nbytes)
"""


def memory(size):
    rows = []
    for what, n, m in (("nm_mask", 2, 4), ("exact", 2, 4), ("exact", 8, 16), ("exact_at_most", 4, 8), ("approx", 4, 8)):
        cmd = [sys.executable, "-c", _MEMORY, str(size), what, str(n), str(m)]
        # the first process fills Numba's cache, so the measured one loads the kernels
        # instead of compiling them (LLVM's peak memory would hide the solver's)
        subprocess.run(cmd, capture_output=True, check=True)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        extra, mask_bytes = int(out[0]), int(out[1])
        rows.append(dict(call=what, pattern=f"{n}:{m}", peak_extra_MB=extra / 2**20, mask_MB=mask_bytes / 2**20))
        print(f"  {what} {n}:{m}: peak extra {extra / 2**20:.1f} MB for a {mask_bytes / 2**20:.1f} MB mask", flush=True)
    return rows


def target_rows(size, small, timings, rates, start, mem):
    """One row per target: what, measured, goal, ``<=`` or ``>=``, unit, met (None: not measured)."""
    weight_scale = (size / FULL_SIZE) ** 2
    read = timings["read_once"]["median_s"]
    rows = []

    def add(name, measured, goal, unit, note="", compare="<="):
        met = None if measured is None else bool(measured <= goal if compare == "<=" else measured >= goal)
        rows.append(dict(target=name, measured=measured, goal=goal, compare=compare, unit=unit, met=met, note=note))

    for n, m in PATTERNS:
        p = f"{n}:{m}"
        t = {k: timings[f"{k} {p}"]["median_s"] for k in candidates(n, m)}
        add(f"nm_mask {p} / read once", t["nm_mask"] / read, NM_GOAL_X_READ, "x", f"{t['nm_mask']:.4g} s vs {read:.4g} s")
        goal = EXACT_GOAL_S[p] * weight_scale
        add(f"exact {p} keep=exactly", t["exact"], goal, "s", "" if size == FULL_SIZE else f"goal scaled from {EXACT_GOAL_S[p]} s at {FULL_SIZE}^2")
        add(f"exact {p} at_most / exactly", t["exact_at_most"] / t["exact"], AT_MOST_GOAL_X, "x", f"{t['exact_at_most']:.4g} s")
        add(f"approx {p} / exact", t["approx"] / t["exact"], APPROX_GOAL_X, "x", f"{t['approx']:.4g} s")
    for n, m in PATTERNS:
        p = f"{n}:{m}"
        for name in ("exact", "nm_mask"):
            big = timings[f"{name} {p}"]["median_s"] / size**2
            little = rates[f"{name} {p}"]["median_s"] / small**2
            add(f"{name} {p} {small}^2 time per weight / {size}^2", little / big, SMALL_GOAL_X, "x",
                f"{rates[f'{name} {p}']['median_s'] * 1e3:.2f} ms per call")
    if start:
        add("cold start: python -m transmask.demo, empty Numba cache", start["cold"]["wall_s"], COLD_GOAL_S, "s")
        add("compile notice on stderr, cold start", start["cold"]["notice_lines"], 1, "lines",
            "; ".join(start["cold"]["notices"]), compare=">=")
        add("warm start: python -m transmask.demo, warm cache", start["warm"]["wall_s"], WARM_GOAL_S, "s")
    else:
        for name, goal, unit, compare in (("cold start: python -m transmask.demo, empty Numba cache", COLD_GOAL_S, "s", "<="),
                                          ("compile notice on stderr, cold start", 1, "lines", ">="),
                                          ("warm start: python -m transmask.demo, warm cache", WARM_GOAL_S, "s", "<=")):
            add(name, None, goal, unit, "not measured (--quick or --no-startup)", compare)
    for r in mem:
        add(f"memory {r['call']} {r['pattern']}: peak extra - mask", r["peak_extra_MB"] - r["mask_MB"], MEMORY_GOAL_MB, "MB",
            f"{r['peak_extra_MB']:.1f} MB extra for a {r['mask_MB']:.1f} MB mask")
    return rows


def _fmt(value, unit):
    if value is None:
        return "-"
    if unit == "lines":
        return f"{value:.0f}"
    return f"{value:.4g} {unit}" if unit == "s" else f"{value:.2f} {unit}"


def _goal(row):
    return f"{row['compare']} {row['goal']:.3g} {row['unit']}"


def _met(row):
    return "not measured" if row["met"] is None else ("met" if row["met"] else "NOT met")


def table(rows):
    width = max(len(r["target"]) for r in rows)
    lines = [f"  {'target':{width}}  {'goal':>12}  {'measured':>12}  met"]
    for r in rows:
        lines.append(f"  {r['target']:{width}}  {_goal(r):>12}  {_fmt(r['measured'], r['unit']):>12}  {_met(r)}"
                     + (f"  ({r['note']})" if r["note"] else ""))
    return "\n".join(lines)


def markdown(report):
    c = report["config"]
    mi = report["machine"]
    L = [f"# transmask speed targets (issue 17): {c['size']}x{c['size']} float32, {c['threads']} threads", "",
         f"Machine: {provenance_line(mi)}; numpy {mi['numpy']}, numba {mi['numba']}. Load average at start "
         f"{mi['loadavg'][0]:.2f}, at end {mi['loadavg_end'][0]:.2f}. Command: `{mi['command']}`. "
         f"Medians of {c['repeats']} side-by-side repeats. Reading the matrix once (`sum |W|` in blocks of 256 "
         f"rows): {report['timings']['read_once']['median_s']:.3f} s (`np.abs(W).sum()`, which also faults in a "
         f"temporary as large as W: {report['timings']['read_once_numpy']['median_s']:.3f} s). Start-up: "
         "`python -m transmask.demo --no-lp`, the main job as on the bare install.", "",
         "| target | goal | measured | met | note |", "|---|---|---|---|---|"]
    for r in report["targets"]:
        L.append(f"| {r['target']} | {_goal(r)} | {_fmt(r['measured'], r['unit'])} | {_met(r)} | {r['note']} |")
    L += ["", "## Side by side (median seconds)", "", "| n:m | nm_mask | exact | exact at_most | approx |", "|---|---|---|---|---|"]
    for n, m in PATTERNS:
        t = report["timings"]
        L.append(f"| {n}:{m} | " + " | ".join(f"{t[f'{k} {n}:{m}']['median_s']:.3f}" for k in ("nm_mask", "exact", "exact_at_most", "approx")) + " |")
    if report["profile"]:
        L += ["", "## Profile (single thread, core-seconds scaled to the full size)", "", "| solver | n:m | breakdown |", "|---|---|---|"]
        for p in report["profile"]:
            rest = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items() if k not in ("solver", "pattern"))
            L.append(f"| {p['solver']} | {p['pattern']} | {rest} |")
    return "\n".join(L) + "\n"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=None, help=f"side of the large matrix (default {FULL_SIZE}; --quick: 512)")
    ap.add_argument("--small", type=int, default=None, help="side of the small matrix (default 576; --quick: 128)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None, help="side-by-side repeats (default 5; --quick: 2)")
    ap.add_argument("--profile-size", type=int, default=None, help="default 1024; --quick: 256")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-startup", action="store_true", help="skip the cold/warm start of the demo")
    ap.add_argument("--quick", action="store_true", help="small sizes, no start-up, results to a temporary folder")
    ap.add_argument("--out", default=None, help="results folder (default bench/results; --quick: a new temporary folder)")
    args = ap.parse_args(argv)
    q = args.quick
    args.size = args.size or (512 if q else FULL_SIZE)
    args.small = args.small or (128 if q else 576)
    args.repeats = args.repeats or (2 if q else 5)
    args.profile_size = args.profile_size or (128 if q else 1024)
    args.no_startup = args.no_startup or q
    for s in (args.size, args.small):
        if s % 32:
            ap.error(f"size {s} is not a multiple of 32 (the largest m)")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    out = results_folder(args.out, args.quick)
    print(f"results go to {out}", flush=True)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    machine = provenance()
    machine.update(numba=numba.__version__, numpy=np.__version__, command=" ".join(["python bench/targets.py", *argv]))
    print(f"{args.size}x{args.size} float32, {numba.get_num_threads()} Numba threads, load average {machine['loadavg']}", flush=True)
    W = np.random.default_rng(0).standard_normal((args.size, args.size)).astype(np.float32)
    print("side by side:", flush=True)
    timings = side_by_side(W, args.repeats)
    del W
    print(f"small matrices ({args.small}x{args.small}):", flush=True)
    rates = small_rates(args.small, args.repeats)
    start = None
    if not args.no_startup:
        print("start-up (python -m transmask.demo):", flush=True)
        start = startup(numba.get_num_threads())
    print("memory:", flush=True)
    mem = memory(args.size)
    prof = []
    if not args.no_profile:
        print("profile:", flush=True)
        prof = profile(args.profile_size, args.size, args.repeats)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report = dict(machine=machine, config=dict(size=args.size, small=args.small, threads=numba.get_num_threads(), repeats=args.repeats,
                                               profile_size=args.profile_size, quick=args.quick),
                  targets=target_rows(args.size, args.small, timings, rates, start, mem),
                  timings=timings, small=rates, startup=start, memory=mem, profile=prof)
    print(table(report["targets"]))
    (out / "targets.json").write_text(json.dumps(report, indent=1))
    (out / "targets.md").write_text(markdown(report))
    print(f"wrote {out / 'targets.json'} and {out / 'targets.md'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
