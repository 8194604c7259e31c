"""The README's main job: mask a built-in random matrix with every method and compare.

Run ``python -m transmask.demo`` (or ``transmask demo``); it needs only the base
install (numpy + numba). For each pattern it prints, in one unit, what each
method keeps: the kept magnitude as a percentage of the total ``sum |W|`` and
as a fraction of the exact optimum (same ``keep`` mode), whether the mask is
valid, and the time (after a warm-up call, so Numba's one-off compilation is
not counted). The plain row-wise N:M mask is shown as the baseline that
transposability is measured against: it is not transposable, so it keeps more.
When pulp is installed, the exact optimum is also cross-checked against the LP
on a corner of the matrix.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import numpy as np

from .masks import is_nm, is_transposable, kept_l1, nm_mask, optimal_mask

LP_MAX_SIDE = 128  # the LP reference is slow; it checks a corner of the matrix

LEGEND = (
    "kept % = sum |W| on the mask / sum |W|;  of opt = kept / kept by the exact solver with the same keep mode;\n"
    "row-wise = plain n:m along rows (not transposable: the baseline transposability costs against);\n"
    "valid = the mask has the structure it promises (transposable n:m, or row-wise n:m);  "
    "time after one warm-up call"
)


def _pattern_list(text: str) -> list[tuple[int, int]]:
    """argparse type for ``--patterns``: ``"2:4,4:8"`` -> ``[(2, 4), (4, 8)]`` with ``1 <= n <= m``."""
    patterns = []
    for item in text.split(","):
        try:
            n, m = (int(v) for v in item.strip().split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad pattern {item!r}: use n:m with integers, e.g. 2:4") from None
        if not 1 <= n <= m:
            raise argparse.ArgumentTypeError(f"bad pattern {item!r}: need 1 <= n <= m (n is the number kept of every m)")
        if m > 64:
            raise argparse.ArgumentTypeError(f"bad pattern {item!r}: the demo keeps m <= 64")
        patterns.append((n, m))
    return patterns


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 65536:
        raise argparse.ArgumentTypeError(f"{value} is out of range (1..65536)")
    return value


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit status 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parse(argv):
    p = _OneLineParser(prog="transmask demo", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=_positive, nargs=2, default=(1024, 1024), metavar=("ROWS", "COLS"),
                   help="matrix shape (default 1024 1024)")
    p.add_argument("--patterns", type=_pattern_list, default=[(2, 4), (4, 8), (8, 16)],
                   help="comma-separated n:m list, n kept of every m (default 2:4,4:8,8:16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-lp", action="store_true", help="skip the LP cross-check (it runs only when pulp is installed)")
    return p.parse_args(argv)


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def run(rows: int = 1024, cols: int = 1024, patterns=((2, 4), (4, 8), (8, 16)), seed: int = 0) -> list[dict]:
    """Compare the solvers on a Gaussian matrix; one dict per (pattern, keep, method).

    Each dict has ``pattern``, ``keep``, ``method``, ``kept_percent`` (of ``sum |W|``),
    ``fraction_of_optimum`` (of the exact mask's kept magnitude, same ``keep``),
    ``valid`` and ``seconds``.

    Examples
    --------
    >>> rows = run(64, 64, patterns=[(2, 4)])
    >>> [(r["keep"], r["method"]) for r in rows]
    [('-', 'row-wise'), ('exactly', 'exact'), ('exactly', 'approx'), ('at_most', 'exact'), ('at_most', 'approx')]
    >>> all(r["valid"] for r in rows)
    True
    """
    W = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    total = kept_l1(W, np.ones(W.shape, dtype=bool))
    warm = W[: 2 * max(m for _, m in patterns), : 2 * max(m for _, m in patterns)]
    results = []

    def row(pattern, keep, method, mask, seconds, optimum, valid):
        kept = kept_l1(W, mask)
        results.append(dict(pattern=pattern, keep=keep, method=method, kept_percent=100.0 * kept / total,
                            fraction_of_optimum=kept / optimum if optimum else 1.0, valid=bool(valid), seconds=seconds))

    for n, m in patterns:
        pattern = f"{n}:{m}"
        nm_mask(warm, n, m)
        rowwise, t_rowwise = _timed(nm_mask, W, n, m)
        rowwise_index = len(results)
        row(pattern, "-", "row-wise", rowwise, t_rowwise, 0.0, is_nm(rowwise, n, m, keep="exactly"))
        for keep in ("exactly", "at_most"):
            for method in ("exact", "approx"):
                optimal_mask(warm, n, m, method=method, keep=keep)  # JIT warm-up
            best, t_exact = _timed(optimal_mask, W, n, m, keep=keep)
            opt = kept_l1(W, best)
            approx, t_approx = _timed(optimal_mask, W, n, m, method="approx", keep=keep)
            row(pattern, keep, "exact", best, t_exact, opt, is_transposable(best, n, m, keep=keep))
            row(pattern, keep, "approx", approx, t_approx, opt, is_transposable(approx, n, m, keep=keep))
            if keep == "exactly":  # the row-wise baseline, as a fraction of the exactly-n optimum
                results[rowwise_index]["fraction_of_optimum"] = kept_l1(W, rowwise) / opt
    return results


def lp_check(rows: int, cols: int, patterns, seed: int = 0) -> list[tuple[str, float, float]]:
    """Exact optimum vs the LP optimum (pulp/CBC) on the top-left corner of the demo matrix.

    Returns ``(pattern, exact_kept, lp_kept)`` per pattern; they agree to rounding.
    """
    W = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    corner = W[: min(rows, LP_MAX_SIDE), : min(cols, LP_MAX_SIDE)]
    out = []
    for n, m in patterns:
        exact = kept_l1(corner, optimal_mask(corner, n, m))
        lp = kept_l1(corner, optimal_mask(corner, n, m, method="lp"))
        out.append((f"{n}:{m}", exact, lp))
    return out


def main(argv=None) -> int:
    args = _parse(argv)
    rows, cols = args.size
    print(f"transmask demo: {rows}x{cols} float32 Gaussian weights (seed {args.seed}); n is the number kept of every m")
    sys.stdout.flush()
    res = run(rows, cols, args.patterns, args.seed)
    print(f"| {'n:m':5} | {'keep':8} | {'method':8} | {'kept %':>7} | {'of opt':>7} | {'valid':5} | {'time (ms)':>9} |")
    print(f"|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 7}|{'-' * 11}|")
    for r in res:
        print(f"| {r['pattern']:5} | {r['keep']:8} | {r['method']:8} | {r['kept_percent']:7.2f} | "
              f"{r['fraction_of_optimum']:7.4f} | {str(r['valid']):5} | {1e3 * r['seconds']:9.1f} |")
    print(LEGEND)
    for n, m in args.patterns:
        pattern = f"{n}:{m}"
        get = {(r["keep"], r["method"]): r for r in res if r["pattern"] == pattern}
        ex, ap, rw = get[("exactly", "exact")], get[("exactly", "approx")], get[("-", "row-wise")]
        print(f"{pattern}: exact keeps {ex['kept_percent'] - ap['kept_percent']:.2f} points more of |W| than approx; "
              f"transposability costs {rw['kept_percent'] - ex['kept_percent']:.2f} points against row-wise {pattern}")
    if args.no_lp:
        pass
    elif importlib.util.find_spec("pulp") is None:
        print("LP cross-check skipped: pulp is not installed (pip install 'transmask[lp]')")
    else:
        side = f"{min(rows, LP_MAX_SIDE)}x{min(cols, LP_MAX_SIDE)}"
        for pattern, exact, lp in lp_check(rows, cols, args.patterns, args.seed):
            agree = abs(exact - lp) <= 1e-6 * max(abs(lp), 1.0)
            print(f"LP cross-check, {pattern}, {side} corner: exact {exact:.4f}, LP {lp:.4f} "
                  f"({'equal' if agree else 'DIFFERENT'})")
            if not agree:
                return 1
    return 0 if all(r["valid"] for r in res) else 1


if __name__ == "__main__":
    raise SystemExit(main())
