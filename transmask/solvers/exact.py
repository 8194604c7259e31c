r"""Exact solver: the optimal transposable N:M mask, tile by tile.

Every ``m x m`` tile is an independent maximum-weight bipartite b-matching
(rows and columns of degree ``n``), solved exactly:

* full tiles, ``keep="exactly"``, ``m <= 4``: exhaustive search over the valid
  patterns (90 for 2:4, 24 for 1:4 and 3:4), meet-in-the-middle over two
  halves of the rows;
* other full tiles, ``keep="exactly"``: column prices from ``DUAL_ROUNDS``
  rounds of dual coordinate ascent, computed for a chunk of tiles at once in
  SIMD lanes; each row keeps its top-n at those prices (optimal for the rows
  alone, and the prices are valid potentials); successive shortest paths then
  move the remaining excess of over-full columns to short ones
  (:mod:`._tile_flow`). The prices leave about 1/10 of the augmenting paths
  that the plain row top-n would need;
* other full tiles, ``keep="at_most"``: the exactly-n optimum where its prices
  prove it optimal with at most n as well
  (:func:`._tile_flow.also_optimal_at_most`); otherwise a warm start from the
  plain row top-n and shortest paths that move the excess to short columns
  or out of the tile;
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

from ._scale import tile_scale
from ._sorting import selection_network
from .._threads import kernel_guard
from ._dual_prices import dual_prices_across_tiles, lane_workspace, load_tile_lanes, row_topn_lanes
from ._tile_flow import (
    INF,
    also_optimal_at_most,
    at_most_ssp,
    exactly_optimum_is_at_most_optimal,
    full_tile,
    repair_columns_exactly,
    row_topn_at_prices,
    tile_workspace,
)

ENUMERATE_MAX_M = 4  # K(4, 2) = 90 patterns; K(5, 2) = 2040 would no longer pay off
DUAL_ROUNDS = 3  # dual-ascent rounds before the repair: 1-4 timed at 4:8, 8:16, 16:32; 3 was best (2 and 4 within 10 %)
DUAL_LANE_ENTRIES = 8192  # m * m * L: a chunk's two copies and scratch (~200 KB) stay in L2
PATTERN_CHUNK = 128  # tiles scored together: keeps the per-chunk work arrays (~70 KB) in L1/L2


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

    Returns ``(subset_cols, top, top_slot, bottom, bottom_slot, n_slots)``:
    ``subset_cols[s]`` lists the n columns of subset s; ``top[a]`` /
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
    return np.array(subsets, dtype=np.int64).reshape(len(subsets), n), top, top_slot, bottom, bottom_slot, len(slots)


@nb.njit(parallel=True, cache=True, nogil=True)
def _pattern_rows_kernel(A, n, m, subset_cols, top, top_slot, bottom, bottom_slot, n_slots, out):
    """Full tiles, exactly n, small m: meet-in-the-middle search for all tiles of a tile-row at once.

    Loops over the tiles of a tile-row are innermost and branch-free, so LLVM
    vectorises them (SIMD across tiles). Per tile: the bottom half's best
    score for each column-count slot, then the best top half plus its
    completing slot (see :func:`split_pattern_tables`). Ties go to the first
    combination in enumeration order. Only full tiles are written. Tiles go in
    chunks of ``PATTERN_CHUNK`` so that the work arrays stay in cache.
    """
    R, C = A.shape
    TCf = C // m
    S = subset_cols.shape[0]
    h = top.shape[1]
    hb = bottom.shape[1]
    CH = min(TCf, PATTERN_CHUNK)
    for ti in nb.prange(R // m):
        i0 = ti * m
        V = np.empty((m, m, CH))
        sub = np.empty((m, S, CH))
        score = np.empty(CH)
        slot_best = np.empty((n_slots, CH))
        slot_arg = np.zeros((n_slots, CH), dtype=np.int64)
        best = np.empty(CH)
        best_top = np.zeros(CH, dtype=np.int64)
        peak = np.empty(CH)
        for c0 in range(0, TCf, CH):
            nt = min(CH, TCf - c0)
            # the tiles' magnitudes with the tile index innermost (one strided pass over A),
            # then every row subset's sum as contiguous, vectorised lane loops
            for t in range(nt):
                peak[t] = 0.0
            for r in range(m):
                for j in range(m):
                    for t in range(nt):
                        a = abs(A[i0 + r, (c0 + t) * m + j])
                        V[r, j, t] = a
                        peak[t] = max(peak[t], a)
            for t in range(nt):  # tiles far from magnitude 1 are solved at a fixed scale (see _scale)
                s = tile_scale(peak[t])
                if s != 1.0:
                    for r in range(m):
                        for j in range(m):
                            V[r, j, t] *= s
            for r in range(m):
                for s in range(S):
                    c = subset_cols[s, 0]
                    for t in range(nt):
                        sub[r, s, t] = V[r, c, t]
                    for k in range(1, n):
                        c = subset_cols[s, k]
                        for t in range(nt):
                            sub[r, s, t] += V[r, c, t]
            for k in range(n_slots):
                for t in range(nt):
                    slot_best[k, t] = -INF
            for b in range(bottom.shape[0]):
                k = bottom_slot[b]
                s0 = bottom[b, 0]
                if hb == 2:  # 2:4 and m = 3: one fused pass over the lanes
                    s1 = bottom[b, 1]
                    for t in range(nt):
                        sc = sub[h, s0, t] + sub[h + 1, s1, t]
                        old = slot_best[k, t]
                        better = sc > old
                        slot_best[k, t] = sc if better else old
                        slot_arg[k, t] = b if better else slot_arg[k, t]
                    continue
                for t in range(nt):
                    score[t] = sub[h, s0, t]
                for r in range(1, hb):
                    sr = bottom[b, r]
                    for t in range(nt):
                        score[t] += sub[h + r, sr, t]
                for t in range(nt):
                    old = slot_best[k, t]
                    better = score[t] > old
                    slot_best[k, t] = score[t] if better else old
                    slot_arg[k, t] = b if better else slot_arg[k, t]
            for t in range(nt):
                best[t] = -INF
            for a in range(top.shape[0]):
                k = top_slot[a]
                if k < 0:
                    continue
                if h == 2:  # 2:4: one fused pass, same summation order as below
                    s0 = top[a, 0]
                    s1 = top[a, 1]
                    for t in range(nt):
                        sc = slot_best[k, t] + sub[0, s0, t] + sub[1, s1, t]
                        old = best[t]
                        better = sc > old
                        best[t] = sc if better else old
                        best_top[t] = a if better else best_top[t]
                    continue
                for t in range(nt):
                    score[t] = slot_best[k, t]
                for r in range(h):
                    sr = top[a, r]
                    for t in range(nt):
                        score[t] += sub[r, sr, t]
                for t in range(nt):
                    old = best[t]
                    better = score[t] > old
                    best[t] = score[t] if better else old
                    best_top[t] = a if better else best_top[t]
            for t in range(nt):
                j0 = (c0 + t) * m
                a = best_top[t]
                b = slot_arg[top_slot[a], t]
                for r in range(m):
                    for j in range(m):
                        out[i0 + r, j0 + j] = False
                    s = top[a, r] if r < h else bottom[b, r - h]
                    for k in range(n):
                        out[i0 + r, j0 + subset_cols[s, k]] = True


# Stages of the full tiles' chunk loop, in order; a kernel run stops after ``last_stage``
# (the solver runs them all; bench/targets.py times each by running up to it).
STAGE_LOAD = 0  # magnitudes of a chunk of tiles into SIMD lanes
STAGE_PRICES = 1  # dual prices across the chunk (dual coordinate ascent)
STAGE_ROW_TOPN = 2  # row top-n at the prices in lanes; per tile, the warm start of tiles that need a repair
STAGE_REPAIR = 3  # column repair by shortest paths (and, for keep="at_most", the certificate and the at-most SSP)
STAGE_WRITE = 4  # the chunk's mask written to the output
STAGES = ("load", "dual_prices", "row_topn", "repair", "write")

# Columns of the per-tile-row statistics the flow kernel records.
STAT_TILES, STAT_REPAIRED, STAT_PATHS, STAT_FAILED = range(4)


@nb.njit(cache=True, nogil=True, inline="always")
def solve_full_tile_chunk(A, i0, c0, nt, n, m, at_most, rounds, net, lanes, work, out, stats, last_stage):
    """The full tiles ``(i0, (c0 + t) * m)``, ``t < nt``, stage by stage (see ``STAGE_*``).

    Load them into lanes, compute their dual prices together
    (:func:`._dual_prices.dual_prices_across_tiles`), keep each row's top-n at
    the prices in lanes (:func:`._dual_prices.row_topn_lanes`); tiles whose
    columns then keep n as well are optimal as they are, the others are
    warm-started at their prices and repaired one by one
    (:func:`._tile_flow.repair_columns_exactly`). With ``at_most`` the
    exactly-n optimum is kept where its prices prove it optimal with at most
    n too (:func:`._tile_flow.also_optimal_at_most`); other tiles are solved
    by the at-most repair. Adds to ``stats`` (``STAT_*``) the tiles, the
    tiles repaired one by one and their augmenting paths.
    """
    load_tile_lanes(A, i0, c0, nt, m, lanes)
    if last_stage < STAGE_PRICES:
        return
    dual_prices_across_tiles(lanes, n, m, rounds, net)
    if last_stage < STAGE_ROW_TOPN:
        return
    row_topn_lanes(lanes, n, m)
    # the arrays, taken out of the named tuples once per chunk: the per-tile functions take arrays (see _tile_flow)
    Wr, v, thr, keep, excess = lanes.Wr, lanes.v, lanes.thr, lanes.keep, lanes.excess
    w, x, _, colcnt, pot, dist, prev, done, _, failed = work
    L = v.shape[1]
    stats[STAT_TILES] += nt
    for t in range(nt):
        in_lanes = excess[t] == 0  # feasible at the prices: optimal as it is
        if in_lanes and at_most:
            umin = INF
            vmin = INF
            for i in range(m):
                umin = min(umin, thr[i, t])
                vmin = min(vmin, v[i, t])
            in_lanes = also_optimal_at_most(umin, vmin)
        if not in_lanes:
            for i in range(m):
                for j in range(m):
                    w[i, j] = Wr[i, j * L + t]
            paths = row_topn_at_prices(w, x, colcnt, pot, failed, n, m, v, thr, t)
            stats[STAT_REPAIRED] += 1
            stats[STAT_PATHS] += paths
            if last_stage >= STAGE_REPAIR:
                if paths > 0:
                    repair_columns_exactly(w, x, colcnt, pot, dist, prev, done, failed, n, m, paths)
                if at_most and not exactly_optimum_is_at_most_optimal(w, x, pot, m):
                    full_tile(work, n, m, True)
        if last_stage < STAGE_WRITE:
            continue
        j0 = (c0 + t) * m
        if in_lanes:
            for i in range(m):
                for j in range(m):
                    out[i0 + i, j0 + j] = keep[i, j * L + t] != 0
        else:
            for i in range(m):
                for j in range(m):
                    out[i0 + i, j0 + j] = x[i, j] != 0


@nb.njit(cache=True, nogil=True)
def solve_edge_tile(A, i0, j0, r, c, n, work, out):
    """The ``r x c`` tile at ``(i0, j0)`` cut by the matrix edge: at most n per row and column, by :func:`._tile_flow.at_most_ssp`."""
    w, x, rowcnt, colcnt, pot, dist, prev, done, _, _ = work
    top = 0.0
    for i in range(r):
        for j in range(c):
            w[i, j] = abs(A[i0 + i, j0 + j])
            top = max(top, w[i, j])
    s = tile_scale(top)  # far from magnitude 1: solved at a fixed scale (see _scale)
    if s != 1.0:
        for i in range(r):
            for j in range(c):
                w[i, j] *= s
    at_most_ssp(w, x, rowcnt, colcnt, pot, dist, prev, done, r, c, n)
    for i in range(r):
        for j in range(c):
            out[i0 + i, j0 + j] = x[i, j] != 0


@nb.njit(parallel=True, cache=True, nogil=True)
def _flow_kernel(A, n, m, at_most, skip_full, rounds, net, out, stats, last_stage):
    """Tiles by min-cost flow: full tiles chunk by chunk (unless ``skip_full``), edge tiles from the empty flow.

    The full tiles of a tile-row go in chunks of ``L`` tiles
    (:func:`solve_full_tile_chunk`). Tiles cut by the matrix edge are solved by
    :func:`._tile_flow.at_most_ssp`. ``stats[ti]`` receives tile-row ti's
    statistics (``STAT_*``), including the tiles whose "cannot happen" checks
    failed, which :func:`solve` turns into an error.
    """
    R, C = A.shape
    TR = (R + m - 1) // m
    TC = (C + m - 1) // m
    TCf = C // m
    L = max(1, min(TCf, DUAL_LANE_ENTRIES // (m * m)))
    for ti in nb.prange(TR):
        # sized by the tiles' real extent: an m larger than the matrix costs the matrix, not m
        work = tile_workspace(min(m, R), min(m, C))
        i0 = ti * m
        r = min(m, R - i0)
        if r == m and TCf > 0 and not skip_full:
            lanes = lane_workspace(m, L)
            for c0 in range(0, TCf, L):
                solve_full_tile_chunk(A, i0, c0, min(L, TCf - c0), n, m, at_most, rounds, net, lanes, work, out, stats[ti], last_stage)
        for tj in range(TC):
            j0 = tj * m
            c = min(m, C - j0)
            if r == m and c == m:
                continue  # a full tile: done above (or by the pattern search)
            solve_edge_tile(A, i0, j0, r, c, n, work, out)
        stats[ti, STAT_FAILED] += work.failed[0]


def price_network(n: int, m: int) -> np.ndarray:
    """The compare-exchange network of the dual prices: it sorts only the n-th and (n+1)-th largest of m."""
    return selection_network(m, (m - n - 1, m - n) if n < m else (0,))


def run_flow_kernel(A: np.ndarray, n: int, m: int, keep: str, out: np.ndarray, skip_full: bool = False,
                    last_stage: int = STAGE_WRITE, rounds: int = DUAL_ROUNDS) -> np.ndarray:
    """Run the flow kernel into ``out``; return the per-tile-row statistics (``STAT_*`` columns).

    Raises RuntimeError when a check that cannot fail did (a bug: never a silently wrong mask).
    """
    stats = np.zeros(((A.shape[0] + m - 1) // m, 4), dtype=np.int64)
    full_tiles = A.shape[0] >= m and A.shape[1] >= m and not skip_full
    net = price_network(n, m) if full_tiles else np.zeros((0, 2), dtype=np.int64)  # no network for an m beyond the matrix
    with kernel_guard():
        _flow_kernel(A, n, m, keep == "at_most", skip_full, rounds, net, out, stats, last_stage)
    failed = int(stats[:, STAT_FAILED].sum())
    if failed:
        raise RuntimeError(f"transmask exact solver: {failed} tile(s) failed an internal optimality check "
                           f"(n={n}, m={m}, keep={keep!r}); this is a bug, please report it with the input")
    return stats


def solve(A: np.ndarray, n: int, m: int, keep: str) -> np.ndarray:
    """Optimal transposable mask of a validated matrix (see :func:`transmask.optimal_mask`)."""
    R, C = A.shape
    out = np.empty(A.shape, dtype=np.bool_)
    patterns = keep == "exactly" and m <= ENUMERATE_MAX_M and R >= m and C >= m
    if patterns:
        tables = split_pattern_tables(n, m)
        with kernel_guard():
            _pattern_rows_kernel(A, n, m, *tables, out)
        if R % m == 0 and C % m == 0:
            return out
    run_flow_kernel(A, n, m, keep, out, skip_full=patterns)
    return out
