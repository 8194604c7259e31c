"""The README's main job: mask a built-in random matrix with every method and compare.

Run ``python -m transmask.demo`` (or ``transmask demo``). For each method it
prints the kept L1, the fraction of the optimum, whether the mask is a valid
transposable N:M mask, and the time (after a warm-up call, so Numba's JIT is
not counted).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .masks import is_transposable, kept_l1, optimal_mask

LP_MAX_SIDE = 128  # the LP reference is slow; run it on a corner of the matrix


def _parse(argv):
    p = argparse.ArgumentParser(prog="transmask demo", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=(1024, 1024), metavar=("ROWS", "COLS"), help="matrix shape (default 1024 1024)")
    p.add_argument("--patterns", default="2:4,4:8,8:16", help="comma-separated n:m list (default 2:4,4:8,8:16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-lp", action="store_true", help="skip the (slow) LP reference")
    return p.parse_args(argv)


def run(rows: int = 1024, cols: int = 1024, patterns=((2, 4), (4, 8), (8, 16)), seed: int = 0, lp: bool = True) -> list[dict]:
    """Compare the solvers on a Gaussian matrix; returns one dict per (pattern, method, keep)."""
    W = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    results = []
    for n, m in patterns:
        for keep in ("exactly", "at_most"):
            optimal_mask(W[: 2 * m, : 2 * m], n, m, keep=keep)  # JIT warm-up
            t0 = time.perf_counter()
            best = optimal_mask(W, n, m, keep=keep)
            t_exact = time.perf_counter() - t0
            opt = kept_l1(W, best)
            runs = [("exact", W, best, t_exact, opt)]
            optimal_mask(W[: 2 * m, : 2 * m], n, m, method="approx", keep=keep)
            t0 = time.perf_counter()
            approx = optimal_mask(W, n, m, method="approx", keep=keep)
            runs.append(("approx", W, approx, time.perf_counter() - t0, opt))
            if lp and keep == "exactly":
                side_r, side_c = min(rows, LP_MAX_SIDE), min(cols, LP_MAX_SIDE)
                corner = W[:side_r, :side_c]
                t0 = time.perf_counter()
                lp_mask = optimal_mask(corner, n, m, method="lp", keep=keep)
                runs.append((f"lp ({side_r}x{side_c} corner)", corner, lp_mask, time.perf_counter() - t0, kept_l1(corner, best[:side_r, :side_c])))
            for name, Wm, mask, seconds, optimum in runs:
                kept = kept_l1(Wm, mask)
                results.append(
                    dict(pattern=f"{n}:{m}", keep=keep, method=name, kept_l1=kept, fraction_of_optimum=kept / optimum if optimum else 1.0,
                         valid=bool(is_transposable(mask, n, m, keep=keep)), seconds=seconds)
                )
    return results


def main(argv=None) -> int:
    args = _parse(argv)
    patterns = []
    for item in args.patterns.split(","):
        try:
            n, m = (int(v) for v in item.split(":"))
        except ValueError:
            raise SystemExit(f"transmask demo: bad pattern {item!r}; use n:m, e.g. 2:4")
        patterns.append((n, m))
    rows, cols = args.size
    print(f"transmask demo: {rows}x{cols} float32 Gaussian weights (seed {args.seed}); times after JIT warm-up")
    res = run(rows, cols, patterns, args.seed, lp=not args.no_lp)
    print(f"| {'n:m':5} | {'keep':8} | {'method':26} | {'kept L1':>12} | {'of optimum':>10} | {'valid':5} | {'time (s)':>9} |")
    print(f"|{'-'*7}|{'-'*10}|{'-'*28}|{'-'*14}|{'-'*12}|{'-'*7}|{'-'*11}|")
    for r in res:
        print(f"| {r['pattern']:5} | {r['keep']:8} | {r['method']:26} | {r['kept_l1']:12.2f} | {r['fraction_of_optimum']:10.4f} | {str(r['valid']):5} | {r['seconds']:9.4f} |")
    return 0 if all(r["valid"] for r in res) else 1


if __name__ == "__main__":
    raise SystemExit(main())
