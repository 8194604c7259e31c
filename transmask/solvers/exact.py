r"""Exact solver: the optimal transposable N:M mask, tile by tile.

Every ``m x m`` tile is an independent maximum-weight bipartite b-matching
(rows and columns of degree ``n``), solved exactly:

* full tiles, ``keep="exactly"``, ``m <= 4``: exhaustive search over the valid
  patterns (90 for 2:4, 24 for 1:4 and 3:4), meet-in-the-middle over two
  halves of the rows;
* other full tiles: warm start from each row's top-n (optimal for the rows
  alone), then successive shortest paths that move the excess of over-full
  columns to short ones (``keep="exactly"``) or to short ones or out of the
  tile (``keep="at_most"``) (:mod:`._tile_flow`);
* tiles cut by the matrix edge: successive shortest paths from the empty flow
  while a path still gains magnitude.

Tile-rows of tiles run in parallel (``numba.prange``); work arrays are
allocated once per tile-row, never per tile. Ties are broken by index order,
so the mask does not depend on the thread count.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numba as nb
import numpy as np

from ._tile_flow import INF, at_most_ssp, full_tile

ENUMERATE_MAX_M = 4  # K(4, 2) = 90 patterns; K(5, 2) = 2040 would no longer pay off


@lru_cache(maxsize=None)
def split_pattern_tables(n: int, m: int):
    r"""Tables for the meet-in-the-middle pattern search on m x m tiles (small m).

    Every row of a tile with exactly n per row chooses one of the ``C(m, n)``
    n-subsets of the columns. Split the rows into a top half (``h = m // 2``
    rows) and a bottom half. For the bottom half, list every combination of
    subsets and the column counts it produces; a tile's optimum is

    .. math:: \max_{a \in \text{top}} \; s(a) + \max\{ s(b) : b \in \text{bottom},\;
              \text{cnt}(b) = n - \text{cnt}(a) \},

    where the inner maximum is taken per column-count vector (a "slot") in one
    pass over the bottom combinations. For 2:4 that is 36 + 36 combinations
    instead of the 90 complete patterns (K(4, 2) = 90, OEIS A008300).

    Returns ``(subsets, top, top_slot, bottom, bottom_slot, n_slots)``:
    ``subsets[s]`` is a 0/1 column vector with n ones; ``top[a]`` /
    ``bottom[b]`` the subset of each row of the half; ``bottom_slot[b]`` the
    slot of its column counts and ``top_slot[a]`` the slot its completion must
    have (-1 when none exists).
    """
    subsets = list(itertools.combinations(range(m), n))
    sub01 = np.zeros((len(subsets), m), dtype=np.int64)
    for k, cols in enumerate(subsets):
        sub01[k, list(cols)] = 1
    h = m // 2
    top = np.array(list(itertools.product(range(len(subsets)), repeat=h)), dtype=np.int64).reshape(-1, h)
    bottom = np.array(list(itertools.product(range(len(subsets)), repeat=m - h)), dtype=np.int64).reshape(-1, m - h)
    slots: dict[tuple, int] = {}
    bottom_slot = np.empty(len(bottom), dtype=np.int64)
    for b, combo in enumerate(bottom):
        counts = tuple(sub01[combo].sum(axis=0))
        bottom_slot[b] = slots.setdefault(counts, len(slots))
    top_slot = np.empty(len(top), dtype=np.int64)
    for a, combo in enumerate(top):
        need = tuple(n - sub01[combo].sum(axis=0)) if h else tuple([n] * m)
        top_slot[a] = slots.get(need, -1)
    return sub01.astype(np.uint8), top, top_slot, bottom, bottom_slot, len(slots)


@nb.njit(cache=True, nogil=True)
def _pattern_tile(w, n, m, subsets, top, top_slot, bottom, bottom_slot, n_slots, subsum, slot_best, slot_arg, x):
    """Optimal full tile with exactly n per row/column by meet-in-the-middle search."""
    S = subsets.shape[0]
    for i in range(m):
        for s in range(S):
            acc = 0.0
            for j in range(m):
                if subsets[s, j]:
                    acc += w[i, j]
            subsum[i, s] = acc
    h = top.shape[1]
    for k in range(n_slots):
        slot_best[k] = -INF
    for b in range(bottom.shape[0]):
        v = 0.0
        for r in range(bottom.shape[1]):
            v += subsum[h + r, bottom[b, r]]
        k = bottom_slot[b]
        if v > slot_best[k]:
            slot_best[k] = v
            slot_arg[k] = b
    best = -INF
    best_a = 0
    for a in range(top.shape[0]):
        k = top_slot[a]
        if k < 0:
            continue
        v = slot_best[k]
        for r in range(h):
            v += subsum[r, top[a, r]]
        if v > best:
            best = v
            best_a = a
    best_b = slot_arg[top_slot[best_a]]
    for r in range(h):
        for j in range(m):
            x[r, j] = subsets[top[best_a, r], j]
    for r in range(bottom.shape[1]):
        for j in range(m):
            x[h + r, j] = subsets[bottom[best_b, r], j]


@nb.njit(parallel=True, cache=True, nogil=True)
def _exact_kernel(A, n, m, at_most, use_patterns, subsets, top, top_slot, bottom, bottom_slot, n_slots, out):
    R, C = A.shape
    TR = (R + m - 1) // m
    TC = (C + m - 1) // m
    for ti in nb.prange(TR):
        w = np.zeros((m, m))
        x = np.zeros((m, m), dtype=np.uint8)
        rowcnt = np.zeros(m, dtype=np.int64)
        colcnt = np.zeros(m, dtype=np.int64)
        pot = np.zeros(2 * m + 2)
        dist = np.zeros(2 * m + 2)
        prev = np.zeros(2 * m + 2, dtype=np.int64)
        done = np.zeros(2 * m + 2, dtype=np.uint8)
        sortbuf = np.zeros(m)
        subsum = np.zeros((m, subsets.shape[0]))
        slot_best = np.zeros(max(n_slots, 1))
        slot_arg = np.zeros(max(n_slots, 1), dtype=np.int64)
        i0 = ti * m
        r = min(m, R - i0)
        for tj in range(TC):
            j0 = tj * m
            c = min(m, C - j0)
            for i in range(r):
                for j in range(c):
                    w[i, j] = abs(A[i0 + i, j0 + j])
            if r == m and c == m:
                if use_patterns:
                    _pattern_tile(w, n, m, subsets, top, top_slot, bottom, bottom_slot, n_slots, subsum, slot_best, slot_arg, x)
                else:
                    full_tile(w, n, m, x, colcnt, rowcnt, pot, dist, prev, done, sortbuf, at_most)
            else:
                at_most_ssp(w, r, c, n, m, x, rowcnt, colcnt, pot, dist, prev, done)
            for i in range(r):
                for j in range(c):
                    out[i0 + i, j0 + j] = x[i, j] != 0


def solve(A: np.ndarray, n: int, m: int, keep: str) -> np.ndarray:
    """Optimal transposable mask of a validated matrix (see :func:`transmask.optimal_mask`)."""
    use_patterns = keep == "exactly" and m <= ENUMERATE_MAX_M
    tables = split_pattern_tables(n, m) if use_patterns else split_pattern_tables(1, 2)  # unused placeholder
    out = np.empty(A.shape, dtype=np.bool_)
    _exact_kernel(A, n, m, keep == "at_most", use_patterns, *tables, out)
    return out
