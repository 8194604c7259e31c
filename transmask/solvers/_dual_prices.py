r"""Column prices for a chunk of full tiles at once: dual coordinate ascent in SIMD lanes.

The exact solver's warm start (:mod:`.exact`, :mod:`._tile_flow`). For a full
``m x m`` tile with magnitudes ``w`` the LP of "keep exactly n per row and
column" and its dual are

.. math::

    \max_{0 \le x \le 1} \sum_{ij} w_{ij} x_{ij}
    \;\;\text{s.t.}\;\; \sum_j x_{ij} = n,\; \sum_i x_{ij} = n
    \qquad\qquad
    \min_{u, v,\, z \ge 0} \; n \sum_i u_i + n \sum_j v_j + \sum_{ij} z_{ij}
    \;\;\text{s.t.}\;\; u_i + v_j + z_{ij} \ge w_{ij}.

For fixed column prices ``v`` the dual separates by rows: the best ``u_i``
minimises ``n u_i + sum_j max(0, w_ij - v_j - u_i)``, a convex piecewise-linear
function whose minimum is every value between the n-th and the (n+1)-th
largest of ``w[i, :] - v`` (its slope changes from negative to positive
there). Symmetrically for ``v`` given ``u``. **Dual coordinate ascent** (block
coordinate descent on the dual objective; Tseng 2001) alternates the two
exact block minimisations; it is the zero-temperature limit of Sinkhorn's
matrix scaling for entropic optimal transport (Cuturi 2013), and each half
step is the row (column) "bid" of Bertsekas' auction algorithm done for all
rows at once (Bertsekas 1988). We take the **midpoint** of the minimising
interval: it sits as far as possible from both neighbours, so the next half
step does not flip entries that lie on the interval's boundary.

A few rounds do not reach the dual optimum, and they need not: any prices
give a valid warm start. With thresholds ``thr[i]`` = the n-th largest of
``w[i, :] - v`` (the row prices after a last half step), keeping each row's
entries with ``w[i, j] - v[j] >= thr[i]`` keeps exactly n per row (the
row top-n at the prices, :func:`row_topn_lanes` /
:func:`._tile_flow.row_topn_at_prices`), and ``pot[j] = -v[j]`` are column
potentials under which every composite edge ``column j -> row i -> column k``
of the column repair has a non-negative reduced cost (complementary
slackness). A tile whose columns then also keep n is optimal as it is; the
others are repaired by successive shortest paths
(:func:`._tile_flow.repair_columns_exactly`). Prices close to optimal leave
few augmenting paths: on Gaussian tiles the plain row top-n (0 rounds) leaves
about 4.4 / 12.6 / 35.8 units of column excess (4:8 / 8:16 / 16:32); one round
leaves 1.4 / 3.7 / 9.4, two 0.7 / 2.0 / 5.1, three 0.4 / 1.4 / 3.5.

**Lanes.** A half step is one sort of m values per row (or column), and the
rows of a chunk of ``L`` tiles are sorted side by side: lane ``i * L + t`` is
row (or column) ``i`` of tile ``t``, and one sorting network
(:func:`._sorting.sort_lanes`) sorts all ``m * L`` lanes, branch-free, in SIMD
registers. Only the n-th and (n+1)-th ranks are needed, so the network is
pruned to them (:func:`._sorting.selection_network`).

**Precision.** The rounds run in float32: twice the lanes per instruction, and
the prices only steer the warm start (float32 prices are exact float64
numbers, so they are valid prices of the float64 problem). The final
thresholds are computed in float64 from the float64 magnitudes, with the same
operation ``w - v`` that :func:`row_topn_lanes` and
:func:`._tile_flow.row_topn_at_prices` evaluate later, so each row's threshold
is met bit for bit by exactly the entries it ranks at or above the n-th.

References
----------
.. [1] P. Tseng, "Convergence of a block coordinate descent method for
   nondifferentiable minimization", J. Optim. Theory Appl. 109 (2001).
.. [2] M. Cuturi, "Sinkhorn distances: lightspeed computation of optimal
   transport", NeurIPS 2013.
.. [3] D. P. Bertsekas, "The auction algorithm: a distributed relaxation method
   for the assignment problem", Annals of Operations Research 14 (1988).
.. [4] R. K. Ahuja, T. L. Magnanti, J. B. Orlin, "Network Flows", 1993,
   sec. 9.7 (potentials and reduced costs).
"""
from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from ._scale import tile_scale
from ._sorting import sort_lanes


class LaneWork(NamedTuple):
    """Work arrays for the dual prices of a chunk of ``L`` full ``m x m`` tiles (see :func:`lane_workspace`).

    Lane ``b * L + t`` of an ``(m, m * L)`` array is row (or column) ``b`` of
    tile ``t``; ``(m, L)`` arrays hold one value per row (or column) and tile.
    """

    Wr: np.ndarray  # (m, m*L) float64: Wr[i, j*L + t] = |w_t[i, j]| (rows in lanes)
    Wc: np.ndarray  # (m, m*L) float64: Wc[j, i*L + t] = |w_t[i, j]| (columns in lanes)
    Wr32: np.ndarray  # (m, m*L) float32 copy of Wr, for the rounds
    Wc32: np.ndarray  # (m, m*L) float32 copy of Wc
    S: np.ndarray  # (m, m*L) float64 sort scratch
    S32: np.ndarray  # (m, m*L) float32 sort scratch
    u32: np.ndarray  # (m, L) float32 row prices
    v32: np.ndarray  # (m, L) float32 column prices
    v: np.ndarray  # (m, L) float64: the column prices v[j, t] (output)
    thr: np.ndarray  # (m, L) float64: the row thresholds thr[i, t] (output)
    keep: np.ndarray  # (m, m*L) uint8: keep[i, j*L + t], the row top-n at the prices
    cnt: np.ndarray  # (m, L) int64 count scratch
    excess: np.ndarray  # (L,) int64: column excess of each tile at the prices, -1 when it must be redone per tile
    top: np.ndarray  # (L,) float64: each tile's largest magnitude


@nb.njit(cache=True, nogil=True)
def lane_workspace(m, L):
    """A :class:`LaneWork` for chunks of at most ``L`` tiles of side ``m``."""
    return LaneWork(
        np.zeros((m, m * L)),
        np.zeros((m, m * L)),
        np.zeros((m, m * L), dtype=np.float32),
        np.zeros((m, m * L), dtype=np.float32),
        np.empty((m, m * L)),
        np.empty((m, m * L), dtype=np.float32),
        np.empty((m, L), dtype=np.float32),
        np.zeros((m, L), dtype=np.float32),
        np.zeros((m, L)),
        np.zeros((m, L)),
        np.empty((m, m * L), dtype=np.uint8),
        np.empty((m, L), dtype=np.int64),
        np.empty(L, dtype=np.int64),
        np.empty(L),
    )


@nb.njit(cache=True, nogil=True, inline="always")
def load_tile_lanes(A, i0, c0, nt, m, lanes):
    """Magnitudes of the full tiles ``(i0, (c0 + t) * m)``, ``t < nt``, into lanes: ``Wr[i, j*L + t]``, ``Wc[j, i*L + t]``.

    ``Wr32`` and ``Wc32`` get the same values rounded to float32. A tile whose
    largest magnitude is far from 1 is loaded at a fixed scale, a power of two
    (:mod:`._scale`), so that float32 holds it and its sums cannot overflow.
    """
    Wr, Wc, Wr32, Wc32, top = lanes.Wr, lanes.Wc, lanes.Wr32, lanes.Wc32, lanes.top
    L = lanes.v.shape[1]
    for t in range(nt):
        top[t] = 0.0
    for i in range(m):
        for j in range(m):
            for t in range(nt):
                a = abs(A[i0 + i, (c0 + t) * m + j])
                Wr[i, j * L + t] = a
                Wc[j, i * L + t] = a
                Wr32[i, j * L + t] = a
                Wc32[j, i * L + t] = a
                top[t] = max(top[t], a)
    for t in range(nt):
        s = tile_scale(top[t])
        if s != 1.0:
            for i in range(m):
                for j in range(m):
                    a = Wr[i, j * L + t] * s
                    Wr[i, j * L + t] = a
                    Wc[j, i * L + t] = a
                    Wr32[i, j * L + t] = a
                    Wc32[j, i * L + t] = a


@nb.njit(cache=True, nogil=True, inline="always")
def _subtract_and_sort(W, p, S, net, m, L):
    """``S[a, b*L + t] = W[a, b*L + t] - p[a, t]``, then every lane ``(b, t)`` sorted along ``a``."""
    for a in range(m):
        for b in range(m):
            for t in range(L):
                S[a, b * L + t] = W[a, b * L + t] - p[a, t]
    sort_lanes(S, net, m * L)


@nb.njit(cache=True, nogil=True, inline="always")
def _midpoints(S, n, m, L, half, out):
    """``out[b, t]`` = midpoint of the n-th and (n+1)-th largest of lane ``(b, t)`` of a sorted ``S``.

    ``half`` is 0.5 in S's dtype, so that float32 lanes stay float32.
    """
    for b in range(m):
        for t in range(L):
            out[b, t] = half * (S[m - n, b * L + t] + S[m - n - 1, b * L + t])


@nb.njit(cache=True, nogil=True)
def dual_prices_across_tiles(lanes, n, m, rounds, net):
    r"""Column prices ``lanes.v`` and row thresholds ``lanes.thr`` of the loaded tiles, by ``rounds`` rounds of dual coordinate ascent.

    Each round sets the row prices ``u`` to the midpoints of the n-th and
    (n+1)-th largest of ``w[i, :] - v`` and then the column prices ``v`` to
    those of ``w[:, j] - u`` (see the module docstring), in float32 lanes; a
    last half step in float64 gives each row's threshold ``thr[i] =`` the n-th
    largest of ``w[i, :] - v``. ``net`` must sort positions ``m - n - 1`` and
    ``m - n`` (``0`` when n == m), e.g. :func:`._sorting.selection_network`.
    The prices are finite: :func:`load_tile_lanes` keeps every tile's largest
    magnitude below ``2^65``.
    """
    L = lanes.v.shape[1]
    Wr32, Wc32, S32, u32, v32, v, thr = lanes.Wr32, lanes.Wc32, lanes.S32, lanes.u32, lanes.v32, lanes.v, lanes.thr
    for j in range(m):
        for t in range(L):
            v32[j, t] = 0.0
    if n == m:
        rounds = 0
    half = np.float32(0.5)
    for r in range(rounds):
        # rows (lanes i, t) sorted along j, then columns (lanes j, t) along i
        _subtract_and_sort(Wc32, v32, S32, net, m, L)
        _midpoints(S32, n, m, L, half, u32)
        _subtract_and_sort(Wr32, u32, S32, net, m, L)
        _midpoints(S32, n, m, L, half, v32)
    # thresholds in float64: the n-th largest of w_t[i, :] - v_t
    for j in range(m):
        for t in range(L):
            v[j, t] = v32[j, t]
    S = lanes.S
    _subtract_and_sort(lanes.Wc, v, S, net, m, L)
    for i in range(m):
        for t in range(L):
            thr[i, t] = S[m - n, i * L + t]


@nb.njit(cache=True, nogil=True)
def row_topn_lanes(lanes, n, m):
    """:func:`._tile_flow.row_topn_at_prices` for all ``L`` lanes at once, for tiles that need no repair.

    ``keep[i, j*L + t]`` = 1 when ``w_t[i, j] - v[j, t] >= thr[i, t]``, and
    ``excess[t]`` = the column excess of tile t, or -1 when a row of it has
    ties at its threshold (more than n kept); such tiles are redone one by
    one (:func:`._tile_flow.row_topn_at_prices` breaks the ties). A tile with ``excess[t] == 0``
    is row- and column-feasible, hence optimal (complementary slackness with
    the prices), and ``keep`` is its mask: on Gaussian 4:8 tiles after three
    rounds most tiles are, and skip the per-tile work.
    """
    Wr, v, thr, keep, cnt, excess = lanes.Wr, lanes.v, lanes.thr, lanes.keep, lanes.cnt, lanes.excess
    L = v.shape[1]
    for t in range(L):
        excess[t] = 0
    for i in range(m):
        for t in range(L):
            cnt[i, t] = 0
        for j in range(m):
            for t in range(L):
                k = (Wr[i, j * L + t] - v[j, t]) >= thr[i, t]
                keep[i, j * L + t] = k
                cnt[i, t] += k
        for t in range(L):
            excess[t] = -1 if cnt[i, t] != n else excess[t]
    for j in range(m):
        for t in range(L):
            cnt[j, t] = 0
        for i in range(m):
            for t in range(L):
                cnt[j, t] += keep[i, j * L + t]
        for t in range(L):
            e = excess[t]
            excess[t] = e + max(cnt[j, t] - n, 0) if e >= 0 else e
