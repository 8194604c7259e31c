r"""Min-cost flow on one tile: the building blocks of the exact solver.

A tile with magnitudes ``w`` (``r x c`` real entries inside an ``m x m`` block)
is the network

    source --(cap n, cost 0)--> row i --(cap 1, cost -w[i, j])--> column j --(cap n, cost 0)--> sink

and a transposable mask of the tile is an integral flow. The repairs and
:func:`at_most_ssp` are successive-shortest-path (SSP) algorithms with node potentials
(Ahuja, Magnanti & Orlin, *Network Flows*, 1993, sec. 9.7): every residual
edge keeps a non-negative reduced cost ``c(u, v) + pot[u] - pot[v]``, so each
shortest path is a dense Dijkstra over ``2m`` nodes, ``O(m^2)``, and the flow
is optimal for its value after every augmentation.

Warm starts: :func:`row_topn_warm_start` (each row's top-n, potentials 0 on
the columns), or :func:`._dual_prices.dual_prices_across_tiles` + :func:`row_topn_at_prices`
(each row's top-n of ``w - v`` for column prices ``v`` from a few rounds of
dual coordinate ascent, potentials ``-v``), which leaves far fewer paths.

All work arrays live in one :class:`TileWork`, allocated once per tile-row
(per thread), never per tile. The kernels and the functions that run once per
chunk or tile-row take the named tuple; the functions that run once per tile
(or per shortest path) take the few arrays they use. That split is Numba's
price, measured: every array taken out of a named tuple, and every array a
call receives inside a tuple, costs an atomic reference-count update per call
(+15 % on exact 4:8, +60 % on the approximation's 3:4 fill when the per-tile
functions took the whole tuple; 2.5x on the at-most repair when the tuple
was read inside its loops). For the same reason per-tile functions leave
their loops by ``break`` with a flag rather than by an early ``return``. And a
workspace is
written only in functions that receive it as an argument, while the kernel
that creates it only passes it on (Numba's dead-code elimination does not see
that an array taken from a locally created named tuple aliases it, and drops
writes such as ``work.x[i, j] = 1`` there). Node numbering (shared by the SSP routines):
columns ``0 .. cols-1``, rows ``cols .. cols+rows-1``, then the source and the
sink, where ``rows x cols`` is the workspace's tile extent (``m x m`` for full
tiles). Ties are broken by node and index order, so the result is
deterministic.

Failures that cannot happen (no augmenting path where the flow theory
guarantees one, a row left short by the warm start) are counted in
``TileWork.failed``: an exception raised inside a Numba ``prange`` body would
be lost, so the parallel kernels sum the counts and the Python wrappers raise.
"""
from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

INF = np.inf


class TileWork(NamedTuple):
    """One thread's work arrays for the tiles of a tile-row (see :func:`tile_workspace`)."""

    w: np.ndarray  # (rows, cols) float64: the tile's magnitudes
    x: np.ndarray  # (rows, cols) uint8: 1 where the entry is kept
    rowcnt: np.ndarray  # (rows,) int64: kept per tile-row
    colcnt: np.ndarray  # (cols,) int64: kept per tile-column
    pot: np.ndarray  # (cols + rows + 2,) float64: node potentials
    dist: np.ndarray  # (cols + rows + 2,) float64: Dijkstra distances
    prev: np.ndarray  # (cols + rows + 2,) int64: predecessor of each node on its shortest path
    done: np.ndarray  # (cols + rows + 2,) uint8: 1 once a node is settled (or closed)
    sortbuf: np.ndarray  # (max(rows, cols),) float64: insertion-sort scratch
    failed: np.ndarray  # (1,) int64: tiles where a "cannot happen" check failed


@nb.njit(cache=True, nogil=True)
def tile_workspace(rows, cols):
    """A :class:`TileWork` for tiles of at most ``rows x cols`` real entries.

    Allocated once per tile-row by the parallel kernels, never per tile.
    """
    nodes = cols + rows + 2
    return TileWork(
        np.zeros((rows, cols)),
        np.zeros((rows, cols), dtype=np.uint8),
        np.zeros(rows, dtype=np.int64),
        np.zeros(cols, dtype=np.int64),
        np.zeros(nodes),
        np.zeros(nodes),
        np.zeros(nodes, dtype=np.int64),
        np.zeros(nodes, dtype=np.uint8),
        np.zeros(max(rows, cols)),
        np.zeros(1, dtype=np.int64),
    )


@nb.njit(cache=True, nogil=True, inline="always")
def closest_open_node(dist, done, count):
    """Dijkstra's selection by linear scan: ``(node, distance)`` of the unsettled node among the
    first ``count`` with the smallest finite distance, or ``(-1, inf)``. With at most 2m + 2 nodes a
    heap would not pay off; ties go to the lower index, which keeps the result deterministic."""
    best = INF
    u = -1
    for v in range(count):
        # selects, not branches: which node wins is a coin flip for the branch predictor
        better = (dist[v] < best) & (done[v] == 0)
        best = dist[v] if better else best
        u = v if better else u
    return u, best


@nb.njit(cache=True, nogil=True, inline="always")
def _settle_column(w, x, colcnt, pot, dist, prev, done, u, best, rows, row0, sink, n):
    """Relax the residual edges out of column ``u`` (settled at ``best``).

    Back along each kept entry ``(i, u)`` to row ``i`` (dropping it gains
    ``+w[i, u]`` of cost), and on to the sink while the column keeps fewer
    than ``n``. Row ``i`` is node ``row0 + i``. (Arrays, not the
    :class:`TileWork`: taking them out of the tuple once per settled node costs
    measurably; see the module docstring.)
    """
    pu = pot[u]
    for i in range(rows):
        if x[i, u] != 0:
            v = row0 + i
            if done[v] == 0:
                nd = best + w[i, u] + pu - pot[v]
                if nd < dist[v]:  # relax
                    dist[v] = nd
                    prev[v] = u
    if colcnt[u] < n and done[sink] == 0:
        nd = best + pu - pot[sink]
        if nd < dist[sink]:  # relax
            dist[sink] = nd
            prev[sink] = u


@nb.njit(cache=True, nogil=True, inline="always")
def _settle_row(w, x, pot, dist, prev, done, u, best, i, cols):
    """Relax the residual edges out of row ``i`` (node ``u``, settled at ``best``): to every column it does not keep."""
    pu = pot[u]
    for k in range(cols):
        if x[i, k] == 0 and done[k] == 0:
            nd = best - w[i, k] + pu - pot[k]
            if nd < dist[k]:  # relax
                dist[k] = nd
                prev[k] = u


@nb.njit(cache=True, nogil=True, inline="always")
def _update_potentials(pot, dist, nodes, dt):
    """``pot[v] += min(dist[v], dt)`` after a shortest path of length ``dt``: every residual edge keeps a
    non-negative reduced cost, including the reversed edges of the path (Ahuja et al., lemma 9.11)."""
    for v in range(nodes):
        d = dist[v]
        pot[v] += d if d < dt else dt


@nb.njit(cache=True, nogil=True, inline="always")
def row_topn_warm_start(w, x, colcnt, pot, sortbuf, n, m):
    """Keep each row's n largest (ties to the lower column); return the total column excess.

    Sets the row potentials to each row's n-th largest value ``t_i``, so that
    ``w[i, j] - t_i >= 0`` for kept and ``t_i - w[i, k] >= 0`` for dropped
    entries: every residual edge starts with a non-negative reduced cost, and
    no Bellman-Ford pass is needed. The warm start is optimal for the rows
    alone; only columns holding more than n must be repaired.
    """
    for j in range(m):
        colcnt[j] = 0
        pot[j] = 0.0
    for i in range(m):
        # n-th largest of the row by insertion sort into ``sortbuf`` (m is small:
        # O(m^2) moves at worst, no allocation), then keep everything above it
        # and the leftmost entries equal to it.
        for j in range(m):
            v = w[i, j]
            k = j
            while k > 0 and sortbuf[k - 1] < v:
                sortbuf[k] = sortbuf[k - 1]
                k -= 1
            sortbuf[k] = v
        thr = sortbuf[n - 1]
        above = 0
        for j in range(m):
            if w[i, j] > thr:
                above += 1
        ties = n - above
        for j in range(m):
            v = w[i, j]
            if v > thr or (v == thr and ties > 0):
                if v == thr:
                    ties -= 1
                x[i, j] = 1
                colcnt[j] += 1
            else:
                x[i, j] = 0
        pot[m + i] = thr
    excess = 0
    for j in range(m):
        if colcnt[j] > n:
            excess += colcnt[j] - n
    return excess


@nb.njit(cache=True, nogil=True, inline="always")
def row_topn_at_prices(w, x, colcnt, pot, failed, n, m, v, thr, t):
    """Keep each row's n largest ``w[i, j] - v[j, t]`` (threshold ``thr[i, t]``, ties to the lower column).

    Sets ``pot[j] = -v[j, t]`` and returns the column excess (see
    :mod:`._dual_prices`). ``w - v`` is recomputed with the same
    float operation as in the sort, so it meets the threshold bit for bit; a
    row that keeps fewer than n would mean it did not, and counts as a failure.
    """
    for j in range(m):
        colcnt[j] = 0
        pot[j] = -v[j, t]
    for i in range(m):
        th = thr[i, t]
        cnt = 0
        for j in range(m):
            keep = (w[i, j] - v[j, t]) >= th
            x[i, j] = keep
            cnt += keep
        if cnt > n:  # ties at the threshold: keep the lower columns
            for j in range(m - 1, -1, -1):
                if cnt > n and x[i, j] != 0 and (w[i, j] - v[j, t]) == th:
                    x[i, j] = 0
                    cnt -= 1
        if cnt < n:  # cannot happen: the threshold is one of the row's values
            failed[0] += 1
    for i in range(m):
        for j in range(m):
            colcnt[j] += x[i, j]
    excess = 0
    for j in range(m):
        excess += max(colcnt[j] - n, 0)
    return excess


@nb.njit(cache=True, nogil=True, inline="always")
def repair_columns_at_most(w, x, colcnt, rowcnt, pot, dist, prev, done, failed, n, m, excess):
    """``keep="at_most"`` repair: move or drop the column excess of a row-feasible tile along shortest paths.

    Preconditions: every row of ``x`` keeps exactly n (``rowcnt[i] == n``);
    ``pot`` gives every residual edge a non-negative reduced cost (after
    :func:`row_topn_warm_start`, with ``pot[S] = pot[T] = 0``). The network is a
    circulation with a free edge sink -> source; a unit of excess at column j
    travels ``column j -> row i`` (drop kept (i, j), cost ``+w[i, j]``) ``->
    column k`` (keep (i, k), cost ``-w[i, k]``) ... and ends at the source
    ``S``, either through a column with room (``column k -> T -> S``) or by
    giving the unit up (``row i -> S``). Multi-source Dijkstra from all
    over-full columns, stopped when ``S`` is settled; potentials are updated
    with ``pot[v] += min(dist[v], dist[S])`` so every residual edge keeps a
    non-negative reduced cost, hence the final tile is optimal (SSP
    optimality; Ahuja, Magnanti & Orlin, thm. 9.7).
    """
    S = 2 * m
    T = 2 * m + 1
    nodes = 2 * m + 2
    while excess > 0:
        for v in range(nodes):
            dist[v] = INF
            done[v] = 0
            prev[v] = -1
        for j in range(m):
            if colcnt[j] > n:
                dist[j] = 0.0
        while True:
            u, best = closest_open_node(dist, done, nodes)
            if u < 0 or u == S:
                break
            done[u] = 1
            if u < m:  # column u -> rows that keep it; with room, on to the sink
                _settle_column(w, x, colcnt, pot, dist, prev, done, u, best, m, m, T, n)
            elif u < S:  # row i -> columns it does not keep; or give the unit back to the source
                i = u - m
                _settle_row(w, x, pot, dist, prev, done, u, best, i, m)
                if rowcnt[i] > 0:
                    nd = best + pot[u] - pot[S]
                    if nd < dist[S]:  # relax
                        dist[S] = nd
                        prev[S] = u
            else:  # u == T: to the source, or back to columns that send it flow
                nd = best + pot[u] - pot[S]
                if nd < dist[S]:  # relax
                    dist[S] = nd
                    prev[S] = T
                for k in range(m):
                    if colcnt[k] > 0 and done[k] == 0:
                        nd = best + pot[u] - pot[k]
                        if nd < dist[k]:  # relax
                            dist[k] = nd
                            prev[k] = T
        if dist[S] == INF:  # cannot happen: every row can give a unit back
            failed[0] += 1
            break
        _update_potentials(pot, dist, nodes, dist[S])
        # walk the path back; columns fed by T lose a unit of flow to the sink
        v = S
        while prev[v] >= 0:
            u = prev[v]
            if v == S:
                if u != T:
                    rowcnt[u - m] -= 1
            elif v == T:
                colcnt[u] += 1
            elif u == T:
                colcnt[v] -= 1
            elif v < m:
                x[u - m, v] = 1
            else:
                x[v - m, u] = 0
            v = u
        colcnt[v] -= 1
        excess -= 1


@nb.njit(cache=True, nogil=True)
def repair_columns_exactly(w, x, colcnt, pot, dist, prev, done, failed, n, m, excess):
    """``keep="exactly"`` column repair by Dijkstra on the m columns only.

    Successive shortest paths from over-full to short columns, where the rows are not nodes: the
    composite edge ``column j -> row i -> column k`` (drop (i, j), keep (i, k))
    has reduced cost ``w[i, j] - w[i, k] + pot[j] - pot[k] >= 0``, in which
    row potentials cancel. When column j is settled, each row i that keeps it
    gets the value ``dist[j] + w[i, j] + pot[j]`` (if better than before) and
    relaxes its dropped columns once. Selection scans m nodes instead of 2m and
    settles only columns, about half the work per augmenting path. A column
    reached through row i from column j records both (``prev = i * m + j``)
    when it is relaxed: only open columns are relaxed, so the recorded
    predecessors on the path were settled earlier and the walk back ends after
    at most m steps whatever the rounding of the distances. The rows' values
    use the slots ``m .. 2m-1`` of ``dist``.

    Precondition: every row keeps exactly n and ``pot`` (column potentials
    only) gives every composite edge a non-negative reduced cost, e.g. after
    :func:`row_topn_warm_start` (``pot = 0``) or :func:`row_topn_at_prices`.
    The selection and the relaxations are written as selects, not branches:
    their outcomes are data-dependent coin flips, and mispredicted branches
    cost more than the arithmetic (about 2x for m = 16 and 32).
    """
    rowval = dist[m : 2 * m]
    while excess > 0:
        for k in range(m):
            dist[k] = 0.0 if colcnt[k] > n else INF
            done[k] = 0
            prev[k] = -1
            rowval[k] = INF
        while True:
            u, best = closest_open_node(dist, done, m)
            if u < 0 or colcnt[u] < n:  # u < 0 cannot happen for a full tile: some column is short
                target = u
                break
            done[u] = 1
            base = best + pot[u]
            for i in range(m):
                val = base + w[i, u]
                if x[i, u] != 0 and val < rowval[i]:
                    rowval[i] = val
                    via = i * m + u
                    for k in range(m):
                        nd = val - w[i, k] - pot[k]
                        ok = (x[i, k] == 0) & (done[k] == 0) & (nd < dist[k])
                        dist[k] = nd if ok else dist[k]
                        prev[k] = via if ok else prev[k]
        if target < 0:
            failed[0] += 1
            break
        _update_potentials(pot, dist, m, dist[target])
        k = target
        while prev[k] >= 0:
            i = prev[k] // m
            j = prev[k] - i * m
            x[i, k] = 1
            x[i, j] = 0
            k = j
        colcnt[target] += 1
        colcnt[k] -= 1
        excess -= 1


@nb.njit(cache=True, nogil=True)
def full_tile(work, n, m, at_most):
    """Optimal full tile ``work.w``, exactly or at most n per row and column (plain warm start + column repair).

    The solvers' fallback for the few tiles the faster paths leave (it takes the whole :class:`TileWork`).
    """
    w, x, rowcnt, colcnt, pot, dist, prev, done, sortbuf, failed = work
    excess = row_topn_warm_start(w, x, colcnt, pot, sortbuf, n, m)
    if excess > 0 and not at_most:
        repair_columns_exactly(w, x, colcnt, pot, dist, prev, done, failed, n, m, excess)
    elif excess > 0:
        for i in range(m):
            rowcnt[i] = n
        pot[2 * m] = 0.0
        pot[2 * m + 1] = 0.0
        repair_columns_at_most(w, x, colcnt, rowcnt, pot, dist, prev, done, failed, n, m, excess)


@nb.njit(cache=True, nogil=True)
def full_tile_exactly(work, n, m, v, thr, t):
    """Optimal full tile ``work.w`` with exactly n per row and column: warm start at the prices of lane t + column repair.

    ``v`` and ``thr`` come from :func:`._dual_prices.dual_prices_across_tiles`.
    Returns the number of augmenting paths. (The kernel runs the two steps
    itself, with the arrays taken out of the workspace once per chunk.)
    """
    w, x, _, colcnt, pot, dist, prev, done, _, failed = work
    excess = row_topn_at_prices(w, x, colcnt, pot, failed, n, m, v, thr, t)
    if excess > 0:
        repair_columns_exactly(w, x, colcnt, pot, dist, prev, done, failed, n, m, excess)
    return excess


@nb.njit(cache=True, nogil=True, inline="always")
def also_optimal_at_most(umin, vmin):
    r"""Whether an optimal tile with exactly n per row and column is also optimal with at most n.

    With column prices ``v_j`` and row prices ``u_i = min_{kept j} (w_ij - v_j)``
    (both from the exactly-n optimum: ``v = -pot``), ``z_ij = max(0, w_ij - u_i - v_j)``
    is a dual solution of equal objective. The at-most LP's dual
    (:math:`\min n\sum u + n\sum v + \sum z`, ``u, v, z >= 0``) is the same
    with non-negative prices; shifting ``u - c, v + c`` keeps the objective,
    so such a shift exists, and the mask is optimal for ``keep="at_most"``,
    exactly when ``min(u) + min(v) >= 0``. Typical for n near m / 2 on real
    weights (the prices sit near the tile's median magnitude); tiles that fail
    are solved by the at-most SSP.
    """
    return umin + vmin >= 0.0


@nb.njit(cache=True, nogil=True, inline="always")
def exactly_optimum_is_at_most_optimal(w, x, pot, m):
    """:func:`also_optimal_at_most` for the exactly-n optimum ``x`` of tile ``w`` (prices ``v = -pot``)."""
    umin = INF
    vmin = INF
    for i in range(m):
        vmin = min(vmin, -pot[i])
        for j in range(m):
            umin = min(umin, w[i, j] + pot[j] if x[i, j] != 0 else INF)
    return also_optimal_at_most(umin, vmin)


@nb.njit(cache=True, nogil=True, inline="always")
def at_most_ssp(w, x, rowcnt, colcnt, pot, dist, prev, done, r, c, n):
    """Optimal tile with at most n per row and column among the ``r x c`` real entries of ``work.w``.

    SSP from the empty flow, source to sink, while the shortest path has
    negative cost (positive gain in kept magnitude): path costs of SSP never
    decrease, so stopping at the first non-negative one gives the minimum-cost
    flow over all flow values. Initial potentials make every reduced cost
    non-negative: ``pot[row] = 0``, ``pot[col j] = -max_i w[i, j]``,
    ``pot[sink] = min_j pot[col j]``. Entries of zero gain are not kept.
    Nodes are numbered by the workspace's extent (columns ``0 ..
    len(colcnt)-1``, then rows, source, sink), so a tile much smaller than
    ``m`` (a matrix smaller than the tile) costs only its real size.
    """
    row0 = colcnt.shape[0]  # rows follow the column slots
    S = row0 + rowcnt.shape[0]
    T = S + 1
    nodes = T + 1
    pot[S] = 0.0
    pmin = 0.0
    for i in range(r):
        rowcnt[i] = 0
        pot[row0 + i] = 0.0
        for j in range(c):
            x[i, j] = 0
    for j in range(c):
        colcnt[j] = 0
        mx = 0.0
        for i in range(r):
            if w[i, j] > mx:
                mx = w[i, j]
        pot[j] = -mx
        if -mx < pmin:
            pmin = -mx
    pot[T] = pmin
    while True:  # one augmenting path per pass, while it gains
        for v in range(nodes):
            dist[v] = INF
            done[v] = 1  # nodes outside the r x c region stay closed
            prev[v] = -1
        for j in range(c):
            done[j] = 0
        for i in range(r):
            done[row0 + i] = 0
        done[S] = 0
        done[T] = 0
        dist[S] = 0.0
        while True:
            u, best = closest_open_node(dist, done, nodes)
            if u < 0 or u == T:
                break
            done[u] = 1
            if u == S:
                for i in range(r):
                    v = row0 + i
                    if rowcnt[i] < n and done[v] == 0:
                        nd = best + pot[u] - pot[v]
                        if nd < dist[v]:  # relax
                            dist[v] = nd
                            prev[v] = S
            elif u < row0:  # column: back to rows that keep it, or on to the sink
                _settle_column(w, x, colcnt, pot, dist, prev, done, u, best, r, row0, T, n)
            else:  # row: to columns it does not keep
                _settle_row(w, x, pot, dist, prev, done, u, best, u - row0, c)
        if dist[T] == INF or not dist[T] - pot[S] + pot[T] < 0.0:
            break  # no path left, or the best one no longer gains magnitude
        _update_potentials(pot, dist, nodes, dist[T])
        v = T
        while prev[v] >= 0:
            u = prev[v]
            if v == T:
                colcnt[u] += 1
            elif u == S:
                rowcnt[v - row0] += 1
            elif v < row0:
                x[u - row0, v] = 1
            else:
                x[v - row0, u] = 0
            v = u
