r"""Column-replacement gains of m x m tiles: what a tile keeps when one of its columns is swapped out.

The channel search (:mod:`.search`) moves channels between groups of ``m``
columns ("stripes"). Swapping column ``c`` of stripe ``a`` with column ``d`` of
stripe ``b`` changes only the tiles of those two stripes, and in each of them
exactly one column is replaced by another. So the search needs, for every tile
of a stripe and every column slot ``c`` of it, the optimum of the tile when
``c`` is replaced by a foreign column vector ``x``:

.. math::

    V_c(x) = \max_{S \subseteq \text{rows},\ |S| = n} \; H_c(S) + \sum_{i \in S} x_i ,

where :math:`H_c(S)` is the optimum of the tile without column ``c`` in which
the rows of ``S`` keep ``n - 1`` and the others ``n`` (the new column takes
the ``n`` rows of ``S``). This module tabulates what :math:`V_c` needs, per
stripe, and evaluates the gain :math:`V_c(x) - T` (``T`` the tile's optimum)
of a whole stripe for a candidate column, summed over its tiles.

Two ways, by tile size:

* ``m <= 4``, **exact**: :math:`H_c(S)` for every one of the ``C(m, n)``
  subsets ``S``, from one pass over the valid tile patterns (``K(4, 2) = 90``):
  a pattern that keeps rows ``S`` in column ``c`` is a candidate for
  :math:`H_c(S)` with value (pattern value - its column ``c`` part). The
  tile optimum ``T`` is the best pattern. Then :math:`V_c(x)` is exact and
  every swap's gain is known exactly (:func:`exact_pair_gains`).
* ``m > 4``, **dual bound, then the exact solver**: ``C(8, 4) = 70`` subsets
  and ``K(8, 4) ~ 1.2e11`` patterns are too many to tabulate. By LP duality,
  with the row prices ``u`` of an optimal dual of the tile
  (:func:`tile_row_prices`), :math:`V_c(x) \le T - \mathrm{top}_n(w_c - u) +
  \mathrm{top}_n(x - u)` (the column's own dual term is replaced by the best
  one for ``x``). These bounds rank the swaps of a pair of stripes
  (:func:`priced_pair_candidates`); the caller re-solves the few best with
  :func:`transmask.optimal_mask` and keeps a swap only for its exact gain.
  (A one-exchange *lower* bound from min-cost-flow sensitivity was tried as
  well: it missed most improving swaps, whose new column favours other rows.)

All arrays are float64; the gains are sums over a stripe's tiles in a fixed
order, so results do not depend on the thread count.

References
----------
.. [1] R. K. Ahuja, T. L. Magnanti, J. B. Orlin, "Network Flows", 1993, ch. 9
   (optimality conditions and potentials of min-cost flows).
.. [2] J. Pool, C. Yu, "Channel Permutations for N:M Sparsity", NeurIPS 2021
   (the swap search whose gains these tables provide).
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numba as nb
import numpy as np
from numba import prange

NEG = -1.0e300
EXACT_MAX_M = 4  # K(4, 2) = 90 patterns; K(5, 2) = 2040, K(6, 3) = 297200 would not pay off


@lru_cache(maxsize=None)
def tile_patterns(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Row subsets and valid transposable patterns of an m x m tile.

    Returns ``(subsets, patterns)``: ``subsets[s]`` lists the ``n`` rows of the
    s-th ``n``-subset of ``range(m)`` (lexicographic order); ``patterns[k, j]`` is
    the subset kept by column ``j`` in the k-th tile pattern whose rows all keep
    exactly ``n`` (``len(patterns) = K(m, n)``, OEIS A008300).
    """
    subsets = np.array(list(itertools.combinations(range(m), n)), dtype=np.int64).reshape(-1, n)
    onehot = np.zeros((len(subsets), m), dtype=np.int64)
    for s, rows in enumerate(subsets):
        onehot[s, rows] = 1
    patterns = [p for p in itertools.product(range(len(subsets)), repeat=m) if (onehot[list(p)].sum(axis=0) == n).all()]
    return subsets, np.array(patterns, dtype=np.int64).reshape(-1, m)


@nb.njit(cache=True, parallel=True)
def subset_sums(E, subsets, m, out):
    """``out[e, s, r] = sum(E[e, r*m + i] for i in subsets[s])`` for every entity, subset and row group."""
    C, R = E.shape
    for e in prange(C):
        for r in range(R // m):
            for s in range(subsets.shape[0]):
                acc = 0.0
                for i in subsets[s]:
                    acc += E[e, r * m + i]
                out[e, s, r] = acc


@nb.njit(cache=True, parallel=True)
def exact_tables(P, perm, stripes, patterns, m, T, H):
    """Tile optima ``T[a, r]`` and relative replacement tables ``H[a, c, s, r] = H_c(S_s) - T`` (m <= 4).

    ``P`` are the subset sums of :func:`subset_sums`; ``perm[a*m + j]`` is the
    entity in column ``j`` of stripe ``a``. Only the stripes listed are rebuilt.
    """
    K = patterns.shape[0]
    ns = P.shape[1]
    R4 = P.shape[2]
    for k in prange(stripes.shape[0]):
        a = stripes[k]
        sums = np.empty((R4, m, ns))  # the stripe's subset sums, tile by tile (contiguous per tile)
        for j in range(m):
            e = perm[a * m + j]
            for s in range(ns):
                for r in range(R4):
                    sums[r, j, s] = P[e, s, r]
        h = np.empty((m, ns))
        for r in range(R4):
            t = sums[r]
            best = NEG
            for c in range(m):
                for s in range(ns):
                    h[c, s] = NEG
            for p in range(K):
                v = 0.0
                for j in range(m):
                    v += t[j, patterns[p, j]]
                if v > best:
                    best = v
                for j in range(m):
                    s = patterns[p, j]
                    x = v - t[j, s]
                    if x > h[j, s]:
                        h[j, s] = x
            T[a, r] = best
            for c in range(m):
                for s in range(ns):
                    H[a, c, s, r] = h[c, s] - best


@nb.njit(cache=True, inline="always")
def _exact_gain(P, H, a, c, e, R4, ns, tmp):
    """Sum over the tiles of stripe ``a`` of the optimum gain of putting entity ``e`` in slot ``c``."""
    for r in range(R4):
        tmp[r] = H[a, c, 0, r] + P[e, 0, r]
    for s in range(1, ns):
        for r in range(R4):
            v = H[a, c, s, r] + P[e, s, r]
            if v > tmp[r]:
                tmp[r] = v
    acc = 0.0
    for r in range(R4):
        acc += tmp[r]
    return acc


@nb.njit(cache=True, parallel=True)
def exact_pair_gains(P, H, perm, pa, pb, m, gain, slot_a, slot_b):
    """Best swap between stripes ``pa[k]`` and ``pb[k]`` (exact gains), for each pair k in parallel."""
    ns = P.shape[1]
    R4 = P.shape[2]
    for k in prange(pa.shape[0]):
        a = pa[k]
        b = pb[k]
        tmp = np.empty(R4)
        ga = np.empty((m, m))  # ga[c, d]: stripe a with its slot c replaced by b's column d
        gb = np.empty((m, m))  # gb[d, c]: stripe b with its slot d replaced by a's column c
        for c in range(m):
            for d in range(m):
                ga[c, d] = _exact_gain(P, H, a, c, perm[b * m + d], R4, ns, tmp)
                gb[d, c] = _exact_gain(P, H, b, d, perm[a * m + c], R4, ns, tmp)
        best = 0.0
        bc = -1
        bd = -1
        for c in range(m):
            for d in range(m):
                g = ga[c, d] + gb[d, c]
                if g > best:
                    best = g
                    bc = c
                    bd = d
        gain[k] = best
        slot_a[k] = bc
        slot_b[k] = bd


@nb.njit(cache=True, parallel=True)
def tile_row_prices(E, perm, stripes, mask, n, m, U):
    """Row prices ``U[a, r, :]`` of an optimal dual of every tile of the listed stripes (m > 4).

    The tile LP ``max sum w x`` (rows and columns keep n, ``0 <= x <= 1``) has the
    dual ``min n sum u + n sum v + sum z``, ``z_ij >= w_ij - u_i - v_j``, ``z >= 0``.
    Given the optimal mask, complementary slackness asks ``u_i + v_j <= w_ij``
    where kept and ``>= w_ij`` where not: difference constraints, solved by
    Bellman-Ford from zero (no negative cycle since the mask is optimal). The
    extreme solution and the one of the reversed system are averaged, a point
    inside the optimal face that bounds replacements more evenly.
    """
    R4 = E.shape[1] // m
    for k in prange(stripes.shape[0]):
        a = stripes[k]
        w = np.empty((m, m))
        x = np.zeros((m, m), dtype=np.bool_)
        p = np.empty(m)
        q = np.empty(m)
        for r in range(R4):
            for i in range(m):
                for j in range(m):
                    w[i, j] = E[perm[a * m + j], r * m + i]
                    x[i, j] = mask[k * m + j, r * m + i]
            for i in range(m):
                U[a, r, i] = 0.0
            for side in range(2):
                # p_i = u_i, q_j = -v_j: kept  p_i - q_j <= w_ij ; not kept  q_j - p_i <= -w_ij.
                # side 1 solves for (-p, -q) (the reversed system): the other extreme point.
                for i in range(m):
                    p[i] = 0.0
                    q[i] = 0.0
                for _ in range(2 * m + 1):
                    changed = False
                    for i in range(m):
                        for j in range(m):
                            if side == 0 and x[i, j]:  # p_i <= q_j + w_ij
                                if q[j] + w[i, j] < p[i] - 1e-15:
                                    p[i] = q[j] + w[i, j]
                                    changed = True
                            elif side == 0:  # q_j <= p_i - w_ij
                                if p[i] - w[i, j] < q[j] - 1e-15:
                                    q[j] = p[i] - w[i, j]
                                    changed = True
                            elif x[i, j]:  # negated: q'_j <= p'_i + w_ij
                                if p[i] + w[i, j] < q[j] - 1e-15:
                                    q[j] = p[i] + w[i, j]
                                    changed = True
                            else:  # negated: p'_i <= q'_j - w_ij
                                if q[j] - w[i, j] < p[i] - 1e-15:
                                    p[i] = q[j] - w[i, j]
                                    changed = True
                    if not changed:
                        break
                for i in range(m):
                    U[a, r, i] += 0.5 * (p[i] if side == 0 else -p[i])


@lru_cache(maxsize=None)
def sorting_network(k: int) -> np.ndarray:
    """Comparators ``(i, j)``, ``i < j``, of Batcher's merge-exchange sort of ``k`` items (Knuth, TAOCP 5.2.2 M).

    Applying them in order, each putting the larger value at ``i``, sorts
    descending; branch-free, so the same cost for every input.
    """
    pairs = []
    if k >= 2:
        t = (k - 1).bit_length()
        p = 1 << (t - 1)
        while p > 0:
            q, r, d = 1 << (t - 1), 0, p
            while True:
                pairs += [(i, i + d) for i in range(k - d) if i & p == r]
                if q == p:
                    break
                d, q, r = q - p, q >> 1, p
            p >>= 1
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@nb.njit(cache=True, inline="always")
def _priced_topn(E, U, a, e, n, m, R4, net, buf):
    """``sum_r topn_i(E[e, r*m+i] - U[a, r, i])``: the dual bound's term for entity e in stripe a."""
    acc = 0.0
    for r in range(R4):
        for i in range(m):
            buf[i] = E[e, r * m + i] - U[a, r, i]
        for t in range(net.shape[0]):
            i = net[t, 0]
            j = net[t, 1]
            hi = max(buf[i], buf[j])
            buf[j] = min(buf[i], buf[j])
            buf[i] = hi
        for i in range(n):
            acc += buf[i]
    return acc


@nb.njit(cache=True, parallel=True)
def priced_own_terms(E, U, perm, stripes, n, m, net, Q):
    """``Q[a, j]``: the dual bound's term of stripe a's own channel in slot j (see :func:`priced_pair_candidates`)."""
    R4 = E.shape[1] // m
    for k in prange(stripes.shape[0]):
        a = stripes[k]
        buf = np.empty(m)
        for j in range(m):
            Q[a, j] = _priced_topn(E, U, a, perm[a * m + j], n, m, R4, net, buf)


@nb.njit(cache=True, parallel=True)
def priced_pair_candidates(E, U, Q, perm, pa, pb, n, m, net, top, gains, slot_a, slot_b):
    """Per pair of stripes: the ``top`` swaps with the best dual upper bounds on their gains (m > 4).

    The dual bound: with the row prices ``u`` of an optimal dual of a tile,
    replacing column c by x keeps at most ``T - topn(w_c - u) + topn(x - u)``,
    so a swap gains at most ``qa(x_b) - qa(x_a) + qb(x_a) - qb(x_b)`` (sums over
    the stripes' tiles; ``Q`` caches each stripe's terms for its own channels).
    ``gains[k, t]`` is NEG where fewer candidates exist.
    """
    R4 = E.shape[1] // m
    for k in prange(pa.shape[0]):
        a = pa[k]
        b = pb[k]
        buf = np.empty(m)
        qa = np.empty(m)  # stripe a's term for b's channels
        qb = np.empty(m)  # stripe b's term for a's channels
        for j in range(m):
            qa[j] = _priced_topn(E, U, a, perm[b * m + j], n, m, R4, net, buf)
            qb[j] = _priced_topn(E, U, b, perm[a * m + j], n, m, R4, net, buf)
        for t in range(top):
            gains[k, t] = NEG
            slot_a[k, t] = -1
            slot_b[k, t] = -1
        for c in range(m):
            for d in range(m):
                u = qa[d] - Q[a, c] + qb[c] - Q[b, d]
                t = top
                while t > 0 and gains[k, t - 1] < u:  # keep the best `top`, descending
                    if t < top:
                        gains[k, t] = gains[k, t - 1]
                        slot_a[k, t] = slot_a[k, t - 1]
                        slot_b[k, t] = slot_b[k, t - 1]
                    t -= 1
                if t < top:
                    gains[k, t] = u
                    slot_a[k, t] = c
                    slot_b[k, t] = d
