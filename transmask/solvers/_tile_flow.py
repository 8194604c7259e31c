r"""Min-cost flow on one tile: the building blocks of the exact solver.

A tile with magnitudes ``w`` (``r x c`` real entries inside an ``m x m`` block)
is the network

    source --(cap n, cost 0)--> row i --(cap 1, cost -w[i, j])--> column j --(cap n, cost 0)--> sink

and a transposable mask of the tile is an integral flow. The repair and
:func:`at_most_ssp` are successive-shortest-path (SSP) algorithms with node potentials
(Ahuja, Magnanti & Orlin, *Network Flows*, 1993, sec. 9.7): every residual
edge keeps a non-negative reduced cost ``c(u, v) + pot[u] - pot[v]``, so each
shortest path is a dense Dijkstra over ``2m`` nodes, ``O(m^2)``, and the flow
is optimal for its value after every augmentation.

Warm starts: :func:`row_topn_warm_start` (each row's top-n, potentials 0 on
the columns), or :func:`._dual_prices.dual_prices_across_tiles` + :func:`row_topn_at_prices`
(each row's top-n of ``w - v`` for column prices ``v`` from a few rounds of
dual coordinate ascent, potentials ``-v``), which leaves far fewer paths.

Node numbering (shared by the SSP routines): columns ``0..m-1``, rows
``m..2m-1``, and for :func:`at_most_ssp` the source ``2m`` and the sink
``2m+1``. All work arrays are passed in, so nothing is allocated per tile.
"""
from __future__ import annotations

import numba as nb
import numpy as np

INF = np.inf


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


@nb.njit(cache=True, nogil=True)
def tile_workspace(m):
    """Work arrays for one thread's tiles: ``(w, x, rowcnt, colcnt, pot, dist, prev, done, sortbuf)``.

    Allocated once per tile-row by the parallel kernels, never per tile.
    """
    return (
        np.zeros((m, m)),
        np.zeros((m, m), dtype=np.uint8),
        np.zeros(m, dtype=np.int64),
        np.zeros(m, dtype=np.int64),
        np.zeros(2 * m + 2),
        np.zeros(2 * m + 2),
        np.zeros(2 * m + 2, dtype=np.int64),
        np.zeros(2 * m + 2, dtype=np.uint8),
        np.zeros(m),
    )


@nb.njit(cache=True, nogil=True, inline="always")
def row_topn_warm_start(w, n, m, x, colcnt, pot, sortbuf):
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
def row_topn_at_prices(w, n, m, v, thr, t, x, colcnt, pot):
    """Keep each row's n largest ``w[i, j] - v[j, t]`` (threshold ``thr[i, t]``, ties to the lower column).

    Sets ``pot[j] = -v[j, t]`` and returns the column excess (see
    :mod:`._dual_prices`). ``w - v`` is recomputed with the same
    float operation as in the sort, so it meets the threshold bit for bit.
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
    for i in range(m):
        for j in range(m):
            colcnt[j] += x[i, j]
    excess = 0
    for j in range(m):
        excess += max(colcnt[j] - n, 0)
    return excess


@nb.njit(cache=True, nogil=True)
def repair_columns_at_most(w, n, m, x, colcnt, rowcnt, pot, dist, prev, done, excess):
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
            pu = pot[u]
            if u < m:  # column u -> rows that keep it; with room, on to the sink
                for i in range(m):
                    if x[i, u] != 0:
                        v = m + i
                        if done[v] == 0:
                            nd = best + w[i, u] + pu - pot[v]
                            if nd < dist[v]:
                                dist[v] = nd
                                prev[v] = u
                if colcnt[u] < n and done[T] == 0:
                    nd = best + pu - pot[T]
                    if nd < dist[T]:
                        dist[T] = nd
                        prev[T] = u
            elif u < S:  # row i -> columns it does not keep; or give the unit back to the source
                i = u - m
                for k in range(m):
                    if x[i, k] == 0 and done[k] == 0:
                        nd = best - w[i, k] + pu - pot[k]
                        if nd < dist[k]:
                            dist[k] = nd
                            prev[k] = u
                if rowcnt[i] > 0:
                    nd = best + pu - pot[S]
                    if nd < dist[S]:
                        dist[S] = nd
                        prev[S] = u
            else:  # u == T: to the source, or back to columns that send it flow
                nd = best + pu - pot[S]
                if nd < dist[S]:
                    dist[S] = nd
                    prev[S] = T
                for k in range(m):
                    if colcnt[k] > 0 and done[k] == 0:
                        nd = best + pu - pot[k]
                        if nd < dist[k]:
                            dist[k] = nd
                            prev[k] = T
        if dist[S] == INF:  # cannot happen: every row can give a unit back
            return False
        dt = dist[S]
        for v in range(nodes):
            pot[v] += dist[v] if dist[v] < dt else dt
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
    return True


@nb.njit(cache=True, nogil=True)
def repair_columns_exactly(w, n, m, x, colcnt, pot, dist, prev, done, rowval, excess):
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
    at most m steps whatever the rounding of the distances.

    Precondition: every row keeps exactly n and ``pot`` (column potentials
    only) gives every composite edge a non-negative reduced cost, e.g. after
    :func:`row_topn_warm_start` (``pot = 0``) or :func:`row_topn_at_prices`.
    The selection and the relaxations are written as selects, not branches:
    their outcomes are data-dependent coin flips, and mispredicted branches
    cost more than the arithmetic (about 2x for m = 16 and 32).
    """
    while excess > 0:
        for k in range(m):
            dist[k] = 0.0 if colcnt[k] > n else INF
            done[k] = 0
            prev[k] = -1
            rowval[k] = INF
        target = -1
        while True:
            u, best = closest_open_node(dist, done, m)
            if u < 0:  # cannot happen for a full tile
                return False
            if colcnt[u] < n:
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
        dt = dist[target]
        for k in range(m):
            pot[k] += min(dist[k], dt)
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
    return True


@nb.njit(cache=True, nogil=True)
def full_tile(w, n, m, x, colcnt, rowcnt, pot, dist, prev, done, sortbuf, at_most):
    """Optimal full tile, exactly or at most n per row and column (warm start + column repair)."""
    excess = row_topn_warm_start(w, n, m, x, colcnt, pot, sortbuf)
    if excess > 0 and not at_most:
        # the column-only search needs m slots of dist/prev for the columns; the
        # next m slots of each hold the rows' values and origins

        repair_columns_exactly(w, n, m, x, colcnt, pot, dist, prev, done, dist[m : 2 * m], excess)
    elif excess > 0:
        for i in range(m):
            rowcnt[i] = n
        pot[2 * m] = 0.0
        pot[2 * m + 1] = 0.0
        repair_columns_at_most(w, n, m, x, colcnt, rowcnt, pot, dist, prev, done, excess)


@nb.njit(cache=True, nogil=True)
def full_tile_exactly(w, n, m, v, thr, t, x, colcnt, pot, dist, prev, done, sortbuf):
    """Optimal full tile with exactly n per row and column: warm start at the prices of lane t + column repair.

    ``v`` and ``thr`` come from :func:`._dual_prices.dual_prices_across_tiles`. Tiles whose
    prices or thresholds are not finite (entries beyond float32's range)
    start from the plain row top-n instead. Returns the number of augmenting paths.
    """
    finite = True
    for i in range(m):
        finite &= (np.abs(v[i, t]) < INF) & (np.abs(thr[i, t]) < INF)
    if finite:
        excess = row_topn_at_prices(w, n, m, v, thr, t, x, colcnt, pot)
    else:
        excess = row_topn_warm_start(w, n, m, x, colcnt, pot, sortbuf)
    if excess > 0:
        repair_columns_exactly(w, n, m, x, colcnt, pot, dist, prev, done, dist[m : 2 * m], excess)
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


@nb.njit(cache=True, nogil=True)
def at_most_ssp(w, r, c, n, m, x, rowcnt, colcnt, pot, dist, prev, done):
    """Optimal tile with at most n per row and column among the ``r x c`` real entries.

    SSP from the empty flow, source to sink, while the shortest path has
    negative cost (positive gain in kept magnitude): path costs of SSP never
    decrease, so stopping at the first non-negative one gives the minimum-cost
    flow over all flow values. Initial potentials make every reduced cost
    non-negative: ``pot[row] = 0``, ``pot[col j] = -max_i w[i, j]``,
    ``pot[sink] = min_j pot[col j]``. Entries of zero gain are not kept.
    """
    S = 2 * m
    T = 2 * m + 1
    nodes = 2 * m + 2
    pot[S] = 0.0
    pmin = 0.0
    for i in range(r):
        rowcnt[i] = 0
        pot[m + i] = 0.0
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
    while True:
        for v in range(nodes):
            dist[v] = INF
            done[v] = 1  # nodes outside the r x c region stay closed
            prev[v] = -1
        for j in range(c):
            done[j] = 0
        for i in range(r):
            done[m + i] = 0
        done[S] = 0
        done[T] = 0
        dist[S] = 0.0
        while True:
            u, best = closest_open_node(dist, done, nodes)
            if u < 0 or u == T:
                break
            done[u] = 1
            pu = pot[u]
            if u == S:
                for i in range(r):
                    v = m + i
                    if rowcnt[i] < n and done[v] == 0:
                        nd = best + pu - pot[v]
                        if nd < dist[v]:
                            dist[v] = nd
                            prev[v] = S
            elif u < m:  # column: back to rows that keep it, or on to the sink
                for i in range(r):
                    if x[i, u] != 0:
                        v = m + i
                        if done[v] == 0:
                            nd = best + w[i, u] + pu - pot[v]
                            if nd < dist[v]:
                                dist[v] = nd
                                prev[v] = u
                if colcnt[u] < n:
                    nd = best + pu - pot[T]
                    if nd < dist[T]:
                        dist[T] = nd
                        prev[T] = u
            else:  # row: to columns it does not keep
                i = u - m
                for k in range(c):
                    if x[i, k] == 0 and done[k] == 0:
                        nd = best - w[i, k] + pu - pot[k]
                        if nd < dist[k]:
                            dist[k] = nd
                            prev[k] = u
        if dist[T] == INF:
            return
        cost = dist[T] - pot[S] + pot[T]
        if not cost < 0.0:
            return
        dt = dist[T]
        for v in range(nodes):
            pot[v] += dist[v] if dist[v] < dt else dt
        v = T
        while prev[v] >= 0:
            u = prev[v]
            if v == T:
                colcnt[u] += 1
            elif u == S:
                rowcnt[v - m] += 1
            elif v < m:
                x[u - m, v] = 1
            else:
                x[v - m, u] = 0
            v = u
