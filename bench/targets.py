#!/usr/bin/env python
"""Issue-3 targets for ``transmask.optimal_mask``, and a profile of what limits them.

    python bench/targets.py                  # 8192 x 8192 float32, 2 threads, keep="exactly"
    python bench/targets.py --size 2048      # smaller, quicker

Prints and saves (``bench/results/targets.{md,json}``):

1. **Targets**: wall time of exact and approx at 2:4, 4:8, 8:16, 16:32 (median of
   ``--repeats`` after a warm-up call), next to the issue's targets and the time
   to read the matrix once (``np.abs(W).sum()``, the floor for any solver).
2. **Profile**: where the time goes, measured with single-threaded compiled
   kernels on a ``--profile-size`` matrix and scaled to the full size: for the
   exact solver its own kernel run up to each stage of its chunk loop
   (``transmask.solvers.exact.STAGES``): the tile load alone, the dual prices
   (a few rounds of dual ascent, SIMD across tiles), the row top-n at those
   prices, the column repair (successive shortest paths) and the mask write,
   with the mean number of augmenting paths per tile and the time per path;
   for the approximation
   the greedy alone (``keep="at_most"``) and greedy plus filling to n.
3. **Start-up**: first call in a fresh process with a cold Numba cache (compile
   time) and with a warm cache.
4. **Memory**: peak extra resident memory of one call, next to the size of the
   mask it returns.
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
from bench._machine import cpu_model  # noqa: E402
from transmask.solvers import approx as approx_mod  # noqa: E402
from transmask.solvers import exact as exact_mod  # noqa: E402

TARGETS = {("exact", "2:4"): 0.4, ("exact", "4:8"): 1.0, ("exact", "8:16"): 2.0, ("approx", "2:4"): 0.15, ("approx", "4:8"): 0.15, ("approx", "8:16"): 0.15}
PATTERNS = ((2, 4), (4, 8), (8, 16), (16, 32))


def best_of(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_targets(W, repeats):
    rows = []
    for method in ("exact", "approx"):
        for n, m in PATTERNS:
            tm.optimal_mask(W[: 4 * m, : 4 * m], n, m, method=method)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                tm.optimal_mask(W, n, m, method=method)
                ts.append(time.perf_counter() - t0)
            key = (method, f"{n}:{m}")
            rows.append(dict(method=method, pattern=f"{n}:{m}", median_s=statistics.median(ts), runs_s=ts, target_s=TARGETS.get(key)))
            print(f"  {method:6} {n}:{m:<3} median {statistics.median(ts):8.3f} s  target {TARGETS.get(key, 'report')}", flush=True)
    return rows


def profile(size, full_size, repeats):
    W = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    scale = (full_size / size) ** 2
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    out = []
    try:
        for n, m in PATTERNS[1:]:
            # the exact solver's own kernel, stopped after each stage of its chunk loop
            mask = np.empty(W.shape, dtype=bool)
            run = lambda last, rounds=exact_mod.DUAL_ROUNDS: exact_mod.run_flow_kernel(W, n, m, "exactly", mask, last_stage=last, rounds=rounds)
            cum = [best_of(lambda s=s: run(s), repeats) * scale for s in range(len(exact_mod.STAGES))]
            stats = run(exact_mod.STAGE_ROW_TOPN).sum(axis=0)
            tiles, repaired, paths = (int(stats[k]) for k in (exact_mod.STAT_TILES, exact_mod.STAT_REPAIRED, exact_mod.STAT_PATHS))
            row_topn_paths = int(run(exact_mod.STAGE_ROW_TOPN, rounds=0).sum(axis=0)[exact_mod.STAT_PATHS])
            row = dict(solver="exact (flow)", pattern=f"{n}:{m}")
            row.update({f"{name}_core_s": cum[k] - (cum[k - 1] if k else 0.0) for k, name in enumerate(exact_mod.STAGES)})
            row.update(dual_rounds=exact_mod.DUAL_ROUNDS, paths_per_tile_row_topn=row_topn_paths / tiles, paths_per_tile=paths / tiles,
                       share_of_tiles_repaired=repaired / tiles,
                       us_per_path=(cum[exact_mod.STAGE_REPAIR] - cum[exact_mod.STAGE_ROW_TOPN]) / scale / max(paths, 1) * 1e6)
            out.append(row)
        t24 = best_of(lambda: exact_mod.solve(W, 2, 4, "exactly"), repeats) * scale
        out.append(dict(solver="exact (patterns)", pattern="2:4", total_core_s=t24))
        for n, m in PATTERNS:
            g = best_of(lambda: approx_mod.solve(W, n, m, "at_most"), repeats) * scale
            f = best_of(lambda: approx_mod.solve(W, n, m, "exactly"), repeats) * scale
            out.append(dict(solver="approx", pattern=f"{n}:{m}", greedy_core_s=g, fill_core_s=f - g))
    finally:
        numba.set_num_threads(before)
    return out


_STARTUP = """
import time, numpy as np
t0 = time.perf_counter()
import transmask as tm
t1 = time.perf_counter()
W = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
tm.optimal_mask(W, 2, 4); tm.optimal_mask(W, 4, 8); tm.optimal_mask(W, 4, 8, method="approx")
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def startup():
    res = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold cache", "warm cache"):
            out = subprocess.run([sys.executable, "-c", _STARTUP], env=env, capture_output=True, text=True, check=True).stdout.split()
            res[label] = dict(import_s=float(out[0]), first_calls_s=float(out[1]))
            print(f"  {label}: import {float(out[0]):.2f} s, first calls (exact 2:4, exact 4:8, approx 4:8) {float(out[1]):.2f} s", flush=True)
    return res


_MEMORY = """
import resource, sys, numpy as np, transmask as tm
size, method, n, m = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
W = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
tm.optimal_mask(W[:64, :64], n, m, method=method)

def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

try:  # reset the peak-RSS counter (Linux >= 4.0), so earlier temporaries do not hide this call
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    base = status('VmRSS')
    mask = tm.optimal_mask(W, n, m, method=method)
    extra = status('VmHWM') - base
except OSError:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mask = tm.optimal_mask(W, n, m, method=method)
    extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(extra, mask.nbytes)
"""


def memory(size):
    rows = []
    for method, n, m in (("exact", 2, 4), ("exact", 4, 8), ("approx", 4, 8)):
        cmd = [sys.executable, "-c", _MEMORY, str(size), method, str(n), str(m)]
        # the first process fills Numba's cache, so the measured one loads the kernels
        # instead of compiling them (LLVM's peak memory would hide the solver's)
        subprocess.run(cmd, capture_output=True, check=True)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        extra, mask_bytes = int(out[0]), int(out[1])
        rows.append(dict(method=method, pattern=f"{n}:{m}", peak_extra_MB=extra / 2**20, mask_MB=mask_bytes / 2**20))
        print(f"  {method} {n}:{m}: peak extra {extra / 2**20:.1f} MB for a {mask_bytes / 2**20:.1f} MB mask", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile-size", type=int, default=1024)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    W = np.random.default_rng(0).standard_normal((args.size, args.size)).astype(np.float32)
    read_s = best_of(lambda: np.abs(W).sum(), 3)
    print(f"{args.size}x{args.size} float32, {numba.get_num_threads()} Numba threads; read once: {read_s:.3f} s; load average {os.getloadavg()[0]:.2f}", flush=True)
    print("targets:")
    targets = measure_targets(W, args.repeats)
    del W
    print("profile (single-thread core-seconds, scaled to the full size):")
    prof = profile(args.profile_size, args.size, args.repeats)
    for p in prof:
        print("  " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items()), flush=True)
    print("start-up:")
    start = startup()
    print("memory:")
    mem = memory(args.size)
    report = dict(size=args.size, threads=numba.get_num_threads(), read_once_s=read_s, load_average=os.getloadavg(), cpu=cpu_model(), numba=numba.__version__,
                  numpy=np.__version__, date=time.strftime("%Y-%m-%d %H:%M"), command=" ".join(["python bench/targets.py", *(argv or sys.argv[1:])]),
                  targets=targets, profile=prof, startup=start, memory=mem)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "targets.json").write_text(json.dumps(report, indent=1))
    (out / "targets.md").write_text(_markdown(report))
    print(f"wrote {out / 'targets.md'}")
    return 0


def _markdown(r):
    L = [f"# optimal_mask targets ({r['size']}x{r['size']} float32, {r['threads']} threads, keep=\"exactly\")", "",
         f"Machine: {r['cpu']}, {os.cpu_count()} CPUs; numpy {r['numpy']}, numba {r['numba']}; {r['date']}; load average at end {r['load_average'][0]:.2f}. "
         f"Command: `{r['command']}`. Reading the matrix once (`np.abs(W).sum()`): {r['read_once_s']:.3f} s.", "",
         "| method | n:m | median (s) | target (s) | met |", "|---|---|---|---|---|"]
    for t in r["targets"]:
        tgt = t["target_s"]
        met = "report" if tgt is None else ("yes" if t["median_s"] <= tgt else f"no ({t['median_s'] / tgt:.1f}x)")
        L.append(f"| {t['method']} | {t['pattern']} | {t['median_s']:.3f} | {tgt if tgt is not None else '-'} | {met} |")
    L += ["", "## Profile (single thread, core-seconds scaled to the full size)", "", "| solver | n:m | breakdown |", "|---|---|---|"]
    for p in r["profile"]:
        rest = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items() if k not in ("solver", "pattern"))
        L.append(f"| {p['solver']} | {p['pattern']} | {rest} |")
    L += ["", "## Start-up (fresh process)", ""]
    for k, v in r["startup"].items():
        L.append(f"- {k}: import {v['import_s']:.2f} s, first calls (exact 2:4, exact 4:8, approx 4:8 on 512x512) {v['first_calls_s']:.2f} s")
    L += ["", "## Memory (peak extra RSS of one call)", ""]
    for m in r["memory"]:
        L.append(f"- {m['method']} {m['pattern']}: {m['peak_extra_MB']:.1f} MB extra for a {m['mask_MB']:.1f} MB mask")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
