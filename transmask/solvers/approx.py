r"""The paper's greedy 2-approximation, tile by tile, with rows/columns filled to n.

Greedy (Hubara et al. 2021, Alg. 1): visit a tile's entries from the largest
magnitude to the smallest and keep an entry when its tile-row and tile-column
both keep fewer than ``n``. The result is a maximal b-matching, and the
classical argument for greedy matching gives

.. math:: \text{kept}(\text{greedy}) \ge \tfrac12\, \text{OPT}_{\le n},

where :math:`\text{OPT}_{\le n}` is the best mask with at most ``n`` per
tile-row/column (``keep="at_most"``), which is at least the best with exactly
``n``.

The greedy can leave tile-rows and tile-columns short of ``n``. With
``keep="exactly"`` full tiles are completed: while a row ``r`` and a column
``c`` are short, apply the best augmenting path ``r -> c1 -> r1 -> c`` (keep
``(r, c1)``, drop ``(r1, c1)``, keep ``(r1, c)``), which always exists because
the greedy keeps every (short row, short column) entry. Filling can lose some
magnitude, so each completed tile is checked against the certificate

.. math:: \text{kept} \ge \tfrac12 \min\Big(2\,\text{kept}(\text{greedy}),\;
          \sum_i \text{top}_n(\text{row}_i),\; \sum_j \text{top}_n(\text{col}_j)\Big)
          \ge \tfrac12\, \text{OPT}_{=n},

and a tile that fails it (rare; never seen on random weights) is solved
exactly instead. The 1/2 guarantee therefore holds for every tile, in both
modes. Tiles cut by the matrix edge keep at most ``n`` (the greedy alone).

Order: magnitudes sorted descending, ties to the lower row-major index. Keys
pack the magnitude's bit pattern (monotone for non-negative floats) above the
index, so one integer sort orders the tile; for float64 input the lowest
mantissa bits make room for the index, so values equal to 42 significant bits
count as ties (the certificate above still holds exactly).
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ._tile_flow import full_tile, tile_workspace


@nb.njit(cache=True, nogil=True)
def _greedy_tile(A, bits, i0, j0, r, c, n, m, idx_bits, f64, keys, x, rowcnt, colcnt, rowseen, colseen, w):
    """Greedy on one tile; returns (kept weight, row top-n bound, column top-n bound)."""
    k = 0
    mask_idx = (1 << idx_bits) - 1
    for i in range(r):
        rowcnt[i] = 0
        rowseen[i] = 0
        for j in range(c):
            x[i, j] = 0
            v = abs(A[i0 + i, j0 + j])
            w[i, j] = v
            b = bits[i0 + i, j0 + j]
            if f64:
                b = (b & 0x7FFFFFFFFFFFFFFF) >> idx_bits
            else:
                b = b & 0x7FFFFFFF
            # ascending sort of the negated key = descending magnitude, then ascending index
            keys[k] = -((b << idx_bits) | (mask_idx - (i * m + j)))
            k += 1
    for j in range(c):
        colcnt[j] = 0
        colseen[j] = 0
    keys[:k].sort()
    kept_w = 0.0
    ub_row = 0.0
    ub_col = 0.0
    for t in range(k):
        idx = mask_idx - ((-keys[t]) & mask_idx)
        i = idx // m
        j = idx - i * m
        v = w[i, j]
        if rowseen[i] < n:
            rowseen[i] += 1
            ub_row += v
        if colseen[j] < n:
            colseen[j] += 1
            ub_col += v
        if rowcnt[i] < n and colcnt[j] < n:
            x[i, j] = 1
            rowcnt[i] += 1
            colcnt[j] += 1
            kept_w += v
    return kept_w, ub_row, ub_col


@nb.njit(cache=True, nogil=True)
def _fill_tile(w, n, m, x, rowcnt, colcnt):
    """Complete a greedy tile to exactly n per row/column with best 3-edge augmenting paths.

    Returns the change in kept weight.
    """
    delta = 0.0
    while True:
        best = -np.inf
        br = -1
        bc = -1
        bc1 = -1
        br1 = -1
        for r in range(m):
            if rowcnt[r] >= n:
                continue
            for c in range(m):
                if colcnt[c] >= n:
                    continue
                if x[r, c] == 0:  # direct edge (cannot remain after a maximal greedy; kept for safety)
                    if w[r, c] > best:
                        best = w[r, c]
                        br, bc, bc1, br1 = r, c, -1, -1
                    continue
                for c1 in range(m):
                    if x[r, c1] != 0:
                        continue
                    for r1 in range(m):
                        if x[r1, c1] != 0 and x[r1, c] == 0:
                            g = w[r, c1] - w[r1, c1] + w[r1, c]
                            if g > best:
                                best = g
                                br, bc, bc1, br1 = r, c, c1, r1
        if br < 0:
            return delta
        if bc1 < 0:
            x[br, bc] = 1
        else:
            x[br, bc1] = 1
            x[br1, bc1] = 0
            x[br1, bc] = 1
        rowcnt[br] += 1
        colcnt[bc] += 1
        delta += best


@nb.njit(parallel=True, cache=True, nogil=True)
def _approx_kernel(A, bits, n, m, at_most, f64, idx_bits, out):
    R, C = A.shape
    TR = (R + m - 1) // m
    TC = (C + m - 1) // m
    fallbacks = 0
    for ti in nb.prange(TR):
        keys = np.zeros(m * m, dtype=np.int64)
        w, x, rowcnt, colcnt, pot, dist, prev, done, sortbuf = tile_workspace(m)
        rowseen = np.zeros(m, dtype=np.int64)
        colseen = np.zeros(m, dtype=np.int64)
        local_fallbacks = 0
        i0 = ti * m
        r = min(m, R - i0)
        for tj in range(TC):
            j0 = tj * m
            c = min(m, C - j0)
            kept_w, ub_row, ub_col = _greedy_tile(A, bits, i0, j0, r, c, n, m, idx_bits, f64, keys, x, rowcnt, colcnt, rowseen, colseen, w)
            if r == m and c == m and not at_most:
                short = False
                for i in range(m):
                    if rowcnt[i] < n:
                        short = True
                if short:
                    final_w = kept_w + _fill_tile(w, n, m, x, rowcnt, colcnt)
                    bound = min(2.0 * kept_w, min(ub_row, ub_col))
                    if final_w < 0.5 * bound:
                        full_tile(w, n, m, x, colcnt, rowcnt, pot, dist, prev, done, sortbuf, False)
                        local_fallbacks += 1
            for i in range(r):
                for j in range(c):
                    out[i0 + i, j0 + j] = x[i, j] != 0
        fallbacks += local_fallbacks
    return fallbacks


def solve(A: np.ndarray, n: int, m: int, keep: str, return_fallbacks: bool = False):
    """Greedy 2-approximation (see the module docstring and :func:`transmask.optimal_mask`)."""
    f64 = A.dtype == np.float64
    bits = A.view(np.uint64 if f64 else np.uint32)
    idx_bits = max(1, int(m * m - 1).bit_length())
    if not f64 and 31 + idx_bits > 62:  # pragma: no cover - only for m > 2**15
        raise ValueError(f"m={m} is too large for the approximation's sort keys")
    out = np.empty(A.shape, dtype=np.bool_)
    fallbacks = _approx_kernel(A, bits, n, m, keep == "at_most", f64, idx_bits, out)
    return (out, fallbacks) if return_fallbacks else out
