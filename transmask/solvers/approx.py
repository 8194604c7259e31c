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


@nb.njit(cache=True, nogil=True, inline="always")
def _sort_key(b, idx, idx_bits, f64):
    """Negated sort key of an entry: ascending order = descending magnitude, then ascending index."""
    if f64:
        v = (b & 0x7FFFFFFFFFFFFFFF) >> idx_bits
    else:
        v = b & 0x7FFFFFFF
    return -((v << idx_bits) | (((1 << idx_bits) - 1) - idx))


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
            keys[k] = _sort_key(bits[i0 + i, j0 + j], i * m + j, idx_bits, f64)
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


@nb.njit(cache=True, nogil=True)
def _complete_tile(w, n, m, x, rowcnt, colcnt, kept_w, ub_row, ub_col, pot, dist, prev, done, sortbuf):
    """Fill a full greedy tile to exactly n per row/column and check the 1/2 certificate.

    Returns 1 when the certificate failed and the tile was solved exactly instead, else 0.
    """
    for i in range(m):
        if rowcnt[i] < n:
            final_w = kept_w + _fill_tile(w, n, m, x, rowcnt, colcnt)
            bound = min(2.0 * kept_w, min(ub_row, ub_col))
            if final_w < 0.5 * bound:
                full_tile(w, n, m, x, colcnt, rowcnt, pot, dist, prev, done, sortbuf, False)
                return 1
            return 0
    return 0


@nb.njit(cache=True, nogil=True)
def _unpack_tile(A, i0, j0, n, m, kept, rowpack, colpack, w, x, rowcnt, colcnt):
    """Scalar state of a full greedy tile from its packed form; returns (kept weight, row and column top-n bounds)."""
    kept_w = 0.0
    for i in range(m):
        rowcnt[i] = (rowpack >> (4 * i)) & 15
        colcnt[i] = (colpack >> (4 * i)) & 15
        for j in range(m):
            w[i, j] = abs(A[i0 + i, j0 + j])
            x[i, j] = (kept >> (i * m + j)) & 1
            if x[i, j]:
                kept_w += w[i, j]
    ub_row = 0.0
    ub_col = 0.0
    for i in range(m):
        for j in range(m):
            # (i, j) is among the n largest of its row / column (ties to the lower index)
            rank_r = 0
            rank_c = 0
            v = w[i, j]
            for k in range(m):
                u = w[i, k]
                if u > v or (u == v and k < j):
                    rank_r += 1
                u = w[k, j]
                if u > v or (u == v and k < i):
                    rank_c += 1
            if rank_r < n:
                ub_row += v
            if rank_c < n:
                ub_col += v
    return kept_w, ub_row, ub_col


@nb.njit(cache=True, nogil=True)
def _greedy_small_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, out):
    """Greedy on the full tiles of tile-row ``ti`` (m*m <= 16), vectorised across its tiles.

    Each tile's keys are sorted by a fixed sorting network (Batcher's odd-even
    merge sort; each compare-exchange is applied to all tiles of a chunk at
    once, so LLVM vectorises it), then scanned with the row and column counts
    packed into 4-bit fields of one integer per tile: branch-free, SIMD across
    tiles. Tiles left short with ``keep="exactly"`` are redone one at a time by
    the scalar fill and certificate (:func:`_complete_tile`).
    Returns the number of tiles that failed the certificate.
    """
    C = A.shape[1]
    TCf = C // m
    k = m * m
    mask_idx = (1 << idx_bits) - 1
    full_rows = 0  # packed row counts of a tile whose rows all keep n
    for row in range(m):
        full_rows += n << (4 * row)
    CH = min(TCf, 256)
    i0 = ti * m
    keys = np.empty((k, CH), dtype=np.int64)
    rowpack = np.empty(CH, dtype=np.int64)
    colpack = np.empty(CH, dtype=np.int64)
    kept = np.empty(CH, dtype=np.int64)
    w, x, rowcnt, colcnt, pot, dist, prev, done, sortbuf = tile_workspace(m)
    fallbacks = 0
    for c0 in range(0, TCf, CH):
        nt = min(CH, TCf - c0)
        for i in range(m):
            for j in range(m):
                e = i * m + j
                for t in range(nt):
                    keys[e, t] = _sort_key(bits[i0 + i, (c0 + t) * m + j], e, idx_bits, f64)
        for q in range(comparators.shape[0]):
            a = comparators[q, 0]
            b = comparators[q, 1]
            for t in range(nt):
                u = keys[a, t]
                v = keys[b, t]
                keys[a, t] = min(u, v)
                keys[b, t] = max(u, v)
        for t in range(nt):
            rowpack[t] = 0
            colpack[t] = 0
            kept[t] = 0
        pow2 = (m & (m - 1)) == 0
        mshift = 2 if m == 4 else (1 if m == 2 else 0)
        for e in range(k):
            if pow2:  # shifts instead of integer division keep the loop vectorisable
                for t in range(nt):
                    idx = mask_idx - ((-keys[e, t]) & mask_idx)
                    rs = (idx >> mshift) << 2
                    cs = (idx & (m - 1)) << 2
                    keep = np.int64(((rowpack[t] >> rs) & 15) < n) & np.int64(((colpack[t] >> cs) & 15) < n)
                    rowpack[t] += keep << rs
                    colpack[t] += keep << cs
                    kept[t] |= keep << idx
            else:
                for t in range(nt):
                    idx = mask_idx - ((-keys[e, t]) & mask_idx)
                    i = idx // m
                    rs = 4 * i
                    cs = 4 * (idx - i * m)
                    keep = np.int64(((rowpack[t] >> rs) & 15) < n) & np.int64(((colpack[t] >> cs) & 15) < n)
                    rowpack[t] += keep << rs
                    colpack[t] += keep << cs
                    kept[t] |= keep << idx
        for t in range(nt):
            j0 = (c0 + t) * m
            if not at_most and rowpack[t] != full_rows:
                kept_w, ub_row, ub_col = _unpack_tile(A, i0, j0, n, m, kept[t], rowpack[t], colpack[t], w, x, rowcnt, colcnt)
                fallbacks += _complete_tile(w, n, m, x, rowcnt, colcnt, kept_w, ub_row, ub_col, pot, dist, prev, done, sortbuf)
                for i in range(m):
                    for j in range(m):
                        out[i0 + i, j0 + j] = x[i, j] != 0
            else:
                kt = kept[t]
                for i in range(m):
                    for j in range(m):
                        out[i0 + i, j0 + j] = ((kt >> (i * m + j)) & 1) != 0
    return fallbacks


@nb.njit(parallel=True, cache=True, nogil=True)
def _greedy_small_kernel(A, bits, n, m, at_most, f64, idx_bits, comparators, out):
    """Full tiles of small m, tile-rows in parallel (see :func:`_greedy_small_tile_row`)."""
    fallbacks = 0
    for ti in nb.prange(A.shape[0] // m):
        fallbacks += _greedy_small_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, out)
    return fallbacks


def sorting_network(k: int) -> np.ndarray:
    """Compare-exchange pairs ``(a, b)``, ``a < b``, of Batcher's odd-even merge sort for k keys.

    Built for the next power of two and pruned to pairs inside ``range(k)``
    (padding keys would sit at the top as +inf and never move). Knuth, TAOCP
    vol. 3, sec. 5.3.4.
    """
    p = 1
    while p < k:
        p *= 2
    pairs = []
    size = 1
    while size < p:
        stride = size
        while stride >= 1:
            for start in range(0, p, 2 * size):
                for i in range(start, start + 2 * size - stride):
                    j = i + stride
                    if j < start + 2 * size and (i - start) // (2 * size) == (j - start) // (2 * size):
                        if stride == size or ((i - start) // stride) % 2 == 1:
                            if (i // (2 * size)) == (j // (2 * size)):
                                pairs.append((i, j))
            stride //= 2
        size *= 2
    pairs = [(a, b) for a, b in pairs if b < k]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@nb.njit(parallel=True, cache=True, nogil=True)
def _approx_kernel(A, bits, n, m, at_most, f64, idx_bits, skip_full, out):
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
            full = r == m and c == m
            if full and skip_full:
                continue
            kept_w, ub_row, ub_col = _greedy_tile(A, bits, i0, j0, r, c, n, m, idx_bits, f64, keys, x, rowcnt, colcnt, rowseen, colseen, w)
            if full and not at_most:
                local_fallbacks += _complete_tile(w, n, m, x, rowcnt, colcnt, kept_w, ub_row, ub_col, pot, dist, prev, done, sortbuf)
            for i in range(r):
                for j in range(c):
                    out[i0 + i, j0 + j] = x[i, j] != 0
        fallbacks += local_fallbacks
    return fallbacks


SMALL_M = 4  # m*m <= 16 keys: sorting network + packed 4-bit counters


def solve(A: np.ndarray, n: int, m: int, keep: str, return_fallbacks: bool = False):
    """Greedy 2-approximation (see the module docstring and :func:`transmask.optimal_mask`)."""
    f64 = A.dtype == np.float64
    bits = A.view(np.uint64 if f64 else np.uint32)
    idx_bits = max(1, int(m * m - 1).bit_length())
    if not f64 and 31 + idx_bits > 62:  # pragma: no cover - only for m > 2**15
        raise ValueError(f"m={m} is too large for the approximation's sort keys")
    R, C = A.shape
    out = np.empty(A.shape, dtype=np.bool_)
    fallbacks = 0
    small = m <= SMALL_M and R >= m and C >= m
    if small:
        fallbacks += _greedy_small_kernel(A, bits, n, m, keep == "at_most", f64, idx_bits, sorting_network(m * m), out)
    if not (small and R % m == 0 and C % m == 0):
        fallbacks += _approx_kernel(A, bits, n, m, keep == "at_most", f64, idx_bits, small, out)
    return (out, fallbacks) if return_fallbacks else out
