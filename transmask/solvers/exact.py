r"""Exact solver: the optimal transposable N:M mask, tile by tile.

Every ``m x m`` tile is an independent maximum-weight bipartite b-matching
(rows and columns of degree ``n``), solved exactly:

* full tiles, ``keep="exactly"``, ``m <= 4``: exhaustive search over the valid
  patterns (90 for 2:4, 24 for 1:4 and 3:4), as sums of per-row subset sums;
* other full tiles, ``keep="exactly"``: warm start from each row's top-n
  (optimal for the rows alone), then successive shortest paths that move the
  excess of over-full columns to short ones (:mod:`._tile_flow`);
* ``keep="at_most"`` and tiles cut by the matrix edge: successive shortest
  paths from the empty flow while a path still gains magnitude.

Tile-rows of tiles run in parallel (``numba.prange``); work arrays are
allocated once per tile-row, never per tile. Ties are broken by index order,
so the mask does not depend on the thread count.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numba as nb
import numpy as np

from ._tile_flow import at_most_ssp, exactly_tile

ENUMERATE_MAX_M = 4  # K(4, 2) = 90 patterns; K(5, 2) = 2040 would no longer pay off


@lru_cache(maxsize=None)
def valid_patterns(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """All m x m 0/1 patterns with exactly n per row and column, as row-subset indices.

    Returns ``(subsets, patterns)``: ``subsets[s]`` is a 0/1 row of length m with
    n ones (``C(m, n)`` of them, in lexicographic order) and ``patterns[p, i]``
    the subset chosen by row i of pattern p (``K(m, n)`` patterns, OEIS A008300).
    """
    subsets = [s for s in itertools.combinations(range(m), n)]
    sub01 = np.zeros((len(subsets), m), dtype=np.uint8)
    for s, cols in enumerate(subsets):
        sub01[s, list(cols)] = 1
    patterns = [p for p in itertools.product(range(len(subsets)), repeat=m) if (sub01[list(p)].sum(axis=0) == n).all()]
    return sub01, np.array(patterns, dtype=np.int16)


@nb.njit(parallel=True, cache=True, nogil=True)
def _exact_kernel(A, n, m, at_most, subsets, patterns, out):
    R, C = A.shape
    TR = (R + m - 1) // m
    TC = (C + m - 1) // m
    use_patterns = (not at_most) and patterns.shape[0] > 0
    S = subsets.shape[0]
    for ti in nb.prange(TR):
        w = np.zeros((m, m))
        x = np.zeros((m, m), dtype=np.uint8)
        rowcnt = np.zeros(m, dtype=np.int64)
        colcnt = np.zeros(m, dtype=np.int64)
        pot = np.zeros(2 * m + 2)
        dist = np.zeros(2 * m + 2)
        prev = np.zeros(2 * m + 2, dtype=np.int64)
        done = np.zeros(2 * m + 2, dtype=np.uint8)
        subsum = np.zeros((m, max(S, 1)))
        i0 = ti * m
        r = min(m, R - i0)
        for tj in range(TC):
            j0 = tj * m
            c = min(m, C - j0)
            for i in range(r):
                for j in range(c):
                    w[i, j] = abs(A[i0 + i, j0 + j])
            if r == m and c == m and not at_most:
                if use_patterns:
                    for i in range(m):
                        for s in range(S):
                            acc = 0.0
                            for j in range(m):
                                if subsets[s, j]:
                                    acc += w[i, j]
                            subsum[i, s] = acc
                    best = -1.0
                    bp = 0
                    for p in range(patterns.shape[0]):
                        tot = 0.0
                        for i in range(m):
                            tot += subsum[i, patterns[p, i]]
                        if tot > best:
                            best = tot
                            bp = p
                    for i in range(m):
                        for j in range(m):
                            x[i, j] = subsets[patterns[bp, i], j]
                else:
                    exactly_tile(w, n, m, x, colcnt, pot, dist, prev, done)
            else:
                at_most_ssp(w, r, c, n, m, x, rowcnt, colcnt, pot, dist, prev, done)
            for i in range(r):
                for j in range(c):
                    out[i0 + i, j0 + j] = x[i, j] != 0


def solve(A: np.ndarray, n: int, m: int, keep: str) -> np.ndarray:
    """Optimal transposable mask of a validated matrix (see :func:`transmask.optimal_mask`)."""
    if keep == "exactly" and m <= ENUMERATE_MAX_M:
        subsets, patterns = valid_patterns(n, m)
    else:
        subsets, patterns = np.zeros((0, m), dtype=np.uint8), np.zeros((0, m), dtype=np.int16)
    out = np.empty(A.shape, dtype=np.bool_)
    _exact_kernel(A, n, m, keep == "at_most", subsets, patterns, out)
    return out
