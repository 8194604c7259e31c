r"""Channel permutations that make the optimal transposable N:M mask keep more.

Which weights share an ``m x m`` tile is an accident of channel order. A
permutation of a layer's output channels (rows), matched by the same
permutation of the next layer's input channels (columns), leaves the network's
function unchanged but regroups the tiles. This module searches for such
permutations; :mod:`transmask.permute.models` applies them to torch models.

Objective. For a permutation ``p`` of the columns (``q`` of the rows) of a
matrix ``W``, the value is the kept magnitude of the exact optimal mask,
``kept(W[q][:, p]) = sum(|W[q][:, p]| * optimal_mask(W[q][:, p], n, m))``. Only
the partition of the channels into groups of ``m`` (the "stripes") matters;
order inside a group does not. For coupled layers (one permutation that is the
columns of some matrices and the rows of others, e.g. an MLP's hidden units:
rows of ``up``/``gate``, columns of ``down``) the value is the sum over the
matrices: every matrix is oriented so that the shared axis is its columns and
the matrices are stacked (each keeps its own tiles).

Search (exact solver in the loop). Local search by channel swaps between
stripes, as in NVIDIA apex's channel-swap search for row-wise 2:4 [1]_: a swap
between stripes ``a`` and ``b`` changes only the tiles of those two stripes,
so its gain is evaluated on them alone (:mod:`._replacement`). For ``m <= 4``
every swap's gain is exact, from per-tile replacement tables built by
enumerating the tile patterns. For ``m > 4`` LP duality bounds every swap's
gain from above (row prices of each tile's optimal dual); the best-bounded swap
of a pair is re-solved with :func:`transmask.optimal_mask` and made only for
its exact gain. A sweep visits every pair of stripes once, in the rounds of a
round-robin tournament: the pairs of a round are disjoint, so they are
evaluated in parallel and each makes its best improving swap; the seed
shuffles the order of the stripes before each sweep, and a pair is skipped
while neither of its stripes changed since it last found nothing. With
``axes="both"`` sweeps alternate between columns and rows. The search starts
from the better of the identity and a magnitude ordering (channels ranked by
L2 norm and dealt to the groups like cards, so that every group gets one
channel of each rank tier); the identity is always a candidate, so the result
never keeps less. The values reported are the kept magnitudes of
:func:`transmask.optimal_mask` on the permuted matrices.

Determinism: for a given seed and ``sweeps`` the result is the same on every
run and thread count. ``time_limit`` (seconds, optional) stops between rounds
and so trades that determinism for a bound on the time.

References
----------
.. [1] J. Pool, C. Yu, "Channel Permutations for N:M Sparsity", NeurIPS 2021;
   NVIDIA apex, ``apex/contrib/sparsity/permutation_search_kernels``.
.. [2] I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and
   Efficient Method to Find N:M Transposable Masks", NeurIPS 2021.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .._validation import as_weight_matrix, check_nm
from ..masks import optimal_mask, tile_kept_l1
from . import _replacement as rp

__all__ = ["search", "search_coupled", "PermutationResult", "CoupledPermutationResult", "magnitude_order", "kept_magnitude"]

INITS = ("magnitude", "identity")
AXES = ("columns", "rows", "both")


@dataclass(frozen=True)
class PermutationResult:
    """Row and column permutations of one matrix (see :func:`search`).

    ``W[row_perm][:, col_perm]`` is the permuted matrix: its i-th row is row
    ``row_perm[i]`` of ``W``. ``kept_identity`` and ``kept`` are the kept
    magnitudes (float64) of the optimal transposable mask before and after
    permuting, ``total`` is ``sum(|W|)``; ``kept >= kept_identity`` always.
    """

    row_perm: np.ndarray
    col_perm: np.ndarray
    kept_identity: float
    kept: float
    total: float
    n: int
    m: int
    sweeps: int
    swaps: int
    seconds: float

    @property
    def gain(self) -> float:
        """``kept - kept_identity`` (>= 0)."""
        return self.kept - self.kept_identity

    def apply(self, W) -> np.ndarray:
        """``W[row_perm][:, col_perm]`` (any array indexable like numpy, e.g. a torch tensor)."""
        return W[self.row_perm][:, self.col_perm]


@dataclass(frozen=True)
class CoupledPermutationResult:
    """One permutation of a channel axis shared by several matrices (see :func:`search_coupled`).

    Apply it as ``A[perm]`` to every matrix in ``rows_of`` and ``B[:, perm]`` to
    every matrix in ``columns_of``. ``kept_identity``/``kept`` are summed over
    all matrices; ``kept_per_matrix`` lists ``(identity, after)`` per matrix,
    rows_of first.
    """

    perm: np.ndarray
    kept_identity: float
    kept: float
    total: float
    n: int
    m: int
    sweeps: int
    swaps: int
    seconds: float
    kept_per_matrix: list = field(default_factory=list)

    @property
    def gain(self) -> float:
        """``kept - kept_identity`` (>= 0)."""
        return self.kept - self.kept_identity


def kept_magnitude(A: np.ndarray, n: int, m: int) -> float:
    """Kept magnitude (float64) of the exact optimal transposable mask of ``A``."""
    mask = optimal_mask(A, n, m)
    return float(np.abs(A[mask], dtype=np.float64).sum())


def magnitude_order(norms: np.ndarray, m: int) -> np.ndarray:
    """Deal channels to groups of ``m`` by rank of ``norms``, boustrophedon.

    Rank tier ``t`` (the ``t``-th block of ``G = len // m`` channels in
    decreasing norm) puts one channel in every group, in forward order for even
    tiers and backward for odd ones, so every group holds one channel of each
    tier and the tiers' sums balance. Channels beyond ``G*m`` keep their places.
    Returns the permutation (new position -> old channel); ties by index.
    """
    norms = np.asarray(norms, dtype=np.float64)
    C = norms.shape[0]
    G = C // m
    perm = np.arange(C)
    if G < 2:
        return perm
    full = np.argsort(-norms[: G * m], kind="stable")
    for rank, channel in enumerate(full):
        tier, pos = divmod(rank, G)
        group = pos if tier % 2 == 0 else G - 1 - pos
        perm[group * m + tier] = channel
    return perm


class _AxisSearch:
    """Swap search over the stripes of one permuted axis of a stack of matrices.

    ``E[e, :]`` is channel ``e`` across every stacked matrix (entity-major, the
    rows of each matrix cut to a multiple of ``m`` so that row groups never
    straddle two matrices); ``perm[pos]`` is the channel at position ``pos``.
    """

    CANDIDATES = 1  # m > 4: swaps per pair re-solved exactly (on a real 4:8 layer 2 found 3 % more gain for twice the time)

    def __init__(self, E: np.ndarray, n: int, m: int, perm: np.ndarray):
        self.E, self.n, self.m = E, n, m
        self.perm = perm
        self.G = E.shape[0] // m
        R4 = E.shape[1] // m
        self.exact = m <= rp.EXACT_MAX_M
        self.T = np.zeros((self.G, R4))
        if self.exact:
            subsets, self.patterns = rp.tile_patterns(n, m)
            self.P = np.empty((E.shape[0], len(subsets), R4))
            rp.subset_sums(E, subsets, m, self.P)
            self.H = np.empty((self.G, m, len(subsets), R4))
        else:
            self.U = np.zeros((self.G, R4, m))
            self.Q = np.zeros((self.G, m))
            self.net = rp.sorting_network(m)
        # clean[a, b]: the pair was evaluated without finding a swap and neither stripe changed since
        self.clean = np.zeros((self.G, self.G), dtype=bool)
        self.refresh(np.arange(self.G))

    def _solve_stripes(self, entities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Optimal masks and per-tile kept magnitudes of stripes given as rows of channels.

        Solved channel-major (the stripes' channels as rows): the transposed
        problem has the transposed optimal masks and the same values, and the
        gather is a contiguous row copy. Masks by :func:`transmask.optimal_mask`, values by :func:`transmask.tile_kept_l1`.
        """
        sub = self.E[entities.ravel()]
        mask = optimal_mask(sub, self.n, self.m)
        return mask, tile_kept_l1(sub, mask, self.m)

    def refresh(self, stripes: np.ndarray) -> None:
        stripes = np.ascontiguousarray(stripes, dtype=np.int64)
        self.clean[stripes, :] = False
        self.clean[:, stripes] = False
        if self.exact:
            rp.exact_tables(self.P, self.perm, stripes, self.patterns, self.m, self.T, self.H)
            return
        mask, self.T[stripes] = self._solve_stripes(self.perm[stripes[:, None] * self.m + np.arange(self.m)])
        rp.tile_row_prices(self.E, self.perm, stripes, mask, self.n, self.m, self.U)
        rp.priced_own_terms(self.E, self.U, self.perm, stripes, self.n, self.m, self.net, self.Q)

    def best_swaps(self, pa: np.ndarray, pb: np.ndarray):
        """Per pair of stripes: the gain and the slots of the swap to make (gain <= 0: none)."""
        k = len(pa)
        gain = np.zeros(k)
        sa = np.zeros(k, dtype=np.int64)
        sb = np.zeros(k, dtype=np.int64)
        if self.exact:
            rp.exact_pair_gains(self.P, self.H, self.perm, pa, pb, self.m, gain, sa, sb)
            return gain, sa, sb
        # m > 4: the swaps with the best dual upper bounds, their gains checked by the exact solver
        top = self.CANDIDATES
        ug = np.zeros((k, top))
        ua = np.zeros((k, top), dtype=np.int64)
        ub = np.zeros((k, top), dtype=np.int64)
        rp.priced_pair_candidates(self.E, self.U, self.Q, self.perm, pa, pb, self.n, self.m, self.net, top, ug, ua, ub)
        cand = [(i, ua[i, t], ub[i, t]) for i in range(k) for t in range(top) if ug[i, t] > 0 and ua[i, t] >= 0]
        m = self.m
        if not cand:
            return gain, sa, sb
        stripes = np.empty((2 * len(cand), m), dtype=np.int64)
        for t, (i, c, d) in enumerate(cand):
            a_ch = self.perm[pa[i] * m: pa[i] * m + m].copy()
            b_ch = self.perm[pb[i] * m: pb[i] * m + m].copy()
            a_ch[c], b_ch[d] = b_ch[d], a_ch[c]
            stripes[2 * t], stripes[2 * t + 1] = a_ch, b_ch
        kept = self._solve_stripes(stripes)[1].sum(axis=1)
        current = self.T.sum(axis=1)
        for t, (i, c, d) in enumerate(cand):
            g = kept[2 * t] + kept[2 * t + 1] - current[pa[i]] - current[pb[i]]
            if g > gain[i]:
                gain[i], sa[i], sb[i] = g, c, d
        return gain, sa, sb

    def objective(self) -> float:
        return float(self.T.sum())

    def sweep(self, rng: np.random.Generator, tol: float, deadline: float | None) -> int:
        """One round-robin pass over all pairs of stripes; returns the number of swaps made."""
        G, m = self.G, self.m
        ids = list(rng.permutation(G)) + ([-1] if G % 2 else [])
        size = len(ids)
        swaps = 0
        for _ in range(size - 1):
            pairs = [(ids[i], ids[size - 1 - i]) for i in range(size // 2)]
            pairs = [(a, b) for a, b in pairs if a >= 0 and b >= 0 and not self.clean[a, b]]
            ids = [ids[0], ids[-1]] + ids[1:-1]  # circle method: fix the first, rotate the rest
            if not pairs:
                continue
            pa = np.array([a for a, _ in pairs], dtype=np.int64)
            pb = np.array([b for _, b in pairs], dtype=np.int64)
            gain, sa, sb = self.best_swaps(pa, pb)
            take = np.nonzero(gain > tol)[0]
            self.clean[pa, pb] = self.clean[pb, pa] = True  # refresh() below unmarks the changed stripes
            if take.size:
                for k in take:
                    i, j = pa[k] * m + sa[k], pb[k] * m + sb[k]
                    self.perm[i], self.perm[j] = self.perm[j], self.perm[i]
                self.refresh(np.concatenate([pa[take], pb[take]]))
                swaps += int(take.size)
            if deadline is not None and time.perf_counter() > deadline:
                break
        return swaps


def _entity_major(blocks: Sequence[np.ndarray], m: int) -> np.ndarray:
    """|blocks| stacked along rows (each cut to a multiple of m rows), transposed to channels x rows, float64."""
    parts = [np.abs(B[: (B.shape[0] // m) * m], dtype=np.float64) for B in blocks]
    stacked = np.concatenate(parts, axis=0) if parts else np.zeros((0, 0))
    return np.ascontiguousarray(stacked.T)


def _check_common(sweeps, seed, init, time_limit):
    if isinstance(sweeps, bool) or not isinstance(sweeps, (int, np.integer)) or sweeps < 0:
        raise ValueError(f"sweeps must be a non-negative integer, got {sweeps!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ValueError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _run_axis(blocks, n, m, perm, sweeps, rng, deadline, progress, label):
    """Sweeps of the swap search on one axis; returns (perm, sweeps done, swaps, stopped early)."""
    E = _entity_major(blocks, m)
    if E.shape[1] == 0 or E.shape[0] // m < 2:
        return perm, 0, 0, True
    state = _AxisSearch(E, n, m, perm.copy())
    tol = 1e-12 * float(E.sum()) + 1e-300
    done = swaps = 0
    for _ in range(sweeps):
        t0 = time.perf_counter()
        before = state.objective()
        k = state.sweep(rng, tol, deadline)
        done += 1
        swaps += k
        _say(progress, f"  {label} sweep: {k} swaps, objective {before:.6g} -> {state.objective():.6g} ({time.perf_counter() - t0:.2f} s)")
        if k == 0 or (deadline is not None and time.perf_counter() > deadline):
            return state.perm, done, swaps, k == 0
    return state.perm, done, swaps, False


def search(W, n: int, m: int, *, axes: str = "both", sweeps: int = 6, seed: int = 0, init: str = "magnitude",
           time_limit: float | None = None, progress: bool = False) -> PermutationResult:
    r"""Row and/or column permutations of ``W`` that maximise the optimal transposable mask's kept magnitude.

    Finds permutations ``q`` (rows) and ``p`` (columns) that increase

    .. math:: \text{kept}(W_{q,p}) = \sum_{ij} |W_{q_i p_j}|\, M^*_{ij},
              \qquad M^* = \text{optimal\_mask}(W_{q,p}, n, m),

    by the exact-solver-in-the-loop swap search described in the module
    docstring. Only the grouping of channels into blocks of ``m`` matters.

    Parameters
    ----------
    W : array_like, shape (rows, cols)
        Weights or a non-negative importance matrix (only magnitudes are used).
    n, m : int
        Keep ``n`` of every ``m``; tiles are ``m x m``.
    axes : {"both", "columns", "rows"}
        Which permutations to search; the other is the identity.
    sweeps : int
        Budget: passes over all pairs of channel groups (with ``axes="both"``,
        columns and rows alternate, one sweep each). Stops earlier when a sweep
        of each searched axis finds no improving swap.
    seed : int
        Shuffles the order in which pairs of groups are visited.
    init : {"magnitude", "identity"}
        Start from the better (by exact kept magnitude) of the identity and the
        magnitude dealing of :func:`magnitude_order`, or from the identity.
    time_limit : float, optional
        Stop after about this many seconds (checked between rounds). The result
        then depends on the machine's speed; leave it None for determinism.
    progress : bool
        Print one line per sweep to stderr.

    Returns
    -------
    PermutationResult
        ``row_perm``, ``col_perm`` (int64), ``kept_identity``, ``kept`` (from
        :func:`transmask.optimal_mask` on the permuted matrix, so re-solving
        gives the same value), ``total``, ``sweeps``, ``swaps``, ``seconds``.
        The identity is returned when nothing better was found.

    Notes
    -----
    Channels beyond the last full group of ``m`` (when the length is not a
    multiple of ``m``) stay in place; rows of a last partial tile row (cut by
    the matrix edge) are not in the search objective but are in the reported
    values. ``keep="exactly"`` masks only.

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> W = np.random.default_rng(0).standard_normal((32, 32))
    >>> res = tm.permute.search(W, 2, 4, seed=0)
    >>> bool(res.kept >= res.kept_identity)
    True
    >>> Wp = res.apply(W)
    >>> bool(np.isclose(tm.kept_l1(Wp, tm.optimal_mask(Wp, 2, 4)), res.kept))
    True
    """
    n, m = check_nm(n, m)
    if axes not in AXES:
        raise ValueError(f"axes must be one of {AXES}, got {axes!r}")
    _check_common(sweeps, seed, init, time_limit)
    A = as_weight_matrix(W, "W")
    t_start = time.perf_counter()
    deadline = None if time_limit is None else t_start + time_limit
    R, C = A.shape
    rows, cols = np.arange(R), np.arange(C)
    kept_id = kept_magnitude(A, n, m)
    total = float(np.abs(A, dtype=np.float64).sum())
    done = swaps = 0
    if n < m:
        rp_, cp_ = rows.copy(), cols.copy()
        if init == "magnitude":
            absA = np.abs(A, dtype=np.float64)
            r0 = magnitude_order(np.sqrt((absA**2).sum(axis=1)), m) if axes in ("rows", "both") else rows
            c0 = magnitude_order(np.sqrt((absA**2).sum(axis=0)), m) if axes in ("columns", "both") else cols
            if kept_magnitude(A[r0][:, c0], n, m) > kept_id:
                rp_, cp_ = r0, c0
        rng = np.random.default_rng(seed)
        if axes == "both":
            idle = 0  # sweeps in a row without a swap; two (one per axis) mean a local optimum
            while done < sweeps and idle < 2:
                if done % 2 == 0:
                    cp_, k, s, _ = _run_axis([A[rp_]], n, m, cp_, 1, rng, deadline, progress, "columns")
                else:
                    rp_, k, s, _ = _run_axis([A[:, cp_].T], n, m, rp_, 1, rng, deadline, progress, "rows")
                done += 1
                swaps += s
                idle = idle + 1 if s == 0 else 0
                if deadline is not None and time.perf_counter() > deadline:
                    break
        elif axes == "columns":
            cp_, done, swaps, _ = _run_axis([A[rp_]], n, m, cp_, sweeps, rng, deadline, progress, "columns")
        else:
            rp_, done, swaps, _ = _run_axis([A[:, cp_].T], n, m, rp_, sweeps, rng, deadline, progress, "rows")
        kept = kept_magnitude(A[rp_][:, cp_], n, m)
        if kept > kept_id:
            rows, cols = rp_, cp_
        else:
            kept = kept_id
    else:
        kept = kept_id
    return PermutationResult(rows.astype(np.int64), cols.astype(np.int64), kept_id, kept, total, n, m, done, swaps,
                             time.perf_counter() - t_start)


def search_coupled(rows_of: Sequence = (), columns_of: Sequence = (), *, n: int, m: int, sweeps: int = 6, seed: int = 0,
                   init: str = "magnitude", time_limit: float | None = None, progress: bool = False) -> CoupledPermutationResult:
    r"""One permutation of a channel axis shared by several matrices, maximising their summed kept magnitude.

    The shared axis is the rows of every matrix in ``rows_of`` and the columns
    of every matrix in ``columns_of`` (e.g. an MLP's hidden units: ``rows_of =
    [W_up, W_gate]``, ``columns_of = [W_down]``; permuting all of them by the
    same ``perm`` leaves the MLP's function unchanged). The value maximised is

    .. math:: \sum_{A \in \text{rows\_of}} \text{kept}(A_{p,:}) + \sum_{B \in \text{columns\_of}} \text{kept}(B_{:,p}).

    Parameters
    ----------
    rows_of, columns_of : sequences of array_like
        The matrices (at least one in all); their shared axis must have one length.
    n, m, sweeps, seed, init, time_limit, progress
        As in :func:`search` (``init="magnitude"`` ranks channels by their L2
        norm over all the matrices).

    Returns
    -------
    CoupledPermutationResult

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> rng = np.random.default_rng(0)
    >>> up, down = rng.standard_normal((48, 16)), rng.standard_normal((16, 48))
    >>> res = tm.permute.search_coupled([up], [down], n=2, m=4)
    >>> bool(res.kept >= res.kept_identity), sorted(res.perm) == list(range(48))
    (True, True)
    """
    n, m = check_nm(n, m)
    _check_common(sweeps, seed, init, time_limit)
    rows_of = [as_weight_matrix(A, f"rows_of[{i}]") for i, A in enumerate(rows_of)]
    columns_of = [as_weight_matrix(B, f"columns_of[{i}]") for i, B in enumerate(columns_of)]
    if not rows_of and not columns_of:
        raise ValueError("search_coupled needs at least one matrix in rows_of or columns_of")
    lengths = {A.shape[0] for A in rows_of} | {B.shape[1] for B in columns_of}
    if len(lengths) != 1:
        raise ValueError(f"the shared axis has different lengths: rows of rows_of {[A.shape[0] for A in rows_of]}, "
                         f"columns of columns_of {[B.shape[1] for B in columns_of]}")
    C = lengths.pop()
    t_start = time.perf_counter()
    deadline = None if time_limit is None else t_start + time_limit
    blocks = [A.T for A in rows_of] + list(columns_of)  # shared axis as columns

    def value(p):
        per = [kept_magnitude(B[:, p], n, m) for B in blocks]
        return float(sum(per)), per

    ident = np.arange(C)
    kept_id, per_id = value(ident)
    total = float(sum(np.abs(B, dtype=np.float64).sum() for B in blocks))
    perm, kept, per = ident, kept_id, per_id
    done = swaps = 0
    if n < m:
        start = ident.copy()
        if init == "magnitude":
            norms = np.sqrt(sum((np.abs(B, dtype=np.float64) ** 2).sum(axis=0) for B in blocks))
            p0 = magnitude_order(norms, m)
            if value(p0)[0] > kept_id:
                start = p0
        found, done, swaps, _ = _run_axis(blocks, n, m, start, sweeps, np.random.default_rng(seed), deadline, progress,
                                          "shared")
        v, per_v = value(found)
        if v > kept_id:
            perm, kept, per = found, v, per_v
    return CoupledPermutationResult(perm.astype(np.int64), kept_id, kept, total, n, m, done, swaps,
                                    time.perf_counter() - t_start, list(zip(per_id, per)))
