"""Public API: transposable and row-wise N:M masks, their checks and statistics.

Conventions (see the package docstring): ``n`` is the number *kept* of every
``m``; W is cut into ``m x m`` tiles from ``(0, 0)``; with ``keep="exactly"``
every full tile keeps exactly ``n`` per tile-row and tile-column, with
``keep="at_most"`` at most ``n``; tiles cut by the matrix edge keep at most
``n`` per tile-row/column among their real entries, in both modes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import solvers
from ._checks import tile_counts
from ._compile_notice import describing
from ._validation import as_mask, as_weight_matrix, check_keep, check_nm, check_optimum
from .solvers._rowwise import rowwise_topn

__all__ = [
    "optimal_mask",
    "nm_mask",
    "is_nm",
    "is_transposable",
    "kept_l1",
    "mask_stats",
    "MaskStats",
    "tile_kept_l1",
    "available_methods",
]


def available_methods() -> dict[str, str]:
    """The solvers :func:`optimal_mask` can use: ``{name: one-line description}``.

    The names are the values of ``optimal_mask(..., method=...)``. ``"exact"``
    and ``"approx"`` need only numpy and numba; ``"lp"`` needs pulp
    (``pip install 'transmask[lp]'``) and is a slow reference for small inputs.

    Returns
    -------
    dict of str to str

    Examples
    --------
    >>> import transmask as tm
    >>> sorted(tm.available_methods())
    ['approx', 'exact', 'lp']
    """
    return {name: spec.description for name, spec in solvers.REGISTRY.items()}


def _is_cuda_tensor(W) -> bool:
    """A torch tensor on a CUDA device (checked without importing torch)."""
    return type(W).__module__.startswith("torch") and getattr(getattr(W, "device", None), "type", None) == "cuda"


def optimal_mask(W, n: int, m: int, method: str = "exact", keep: str = "exactly") -> np.ndarray:
    r"""Transposable N:M mask of ``W`` that keeps the most magnitude.

    Solves, independently for every ``m x m`` tile :math:`T` of ``W``,

    .. math::

        \max_{x \in \{0,1\}^{m \times m}} \sum_{ij} |W_{ij}|\, x_{ij}
        \quad\text{s.t.}\quad \sum_j x_{ij} = n \;\forall i,\qquad
        \sum_i x_{ij} = n \;\forall j

    (``=`` becomes ``<=`` with ``keep="at_most"`` and in tiles cut by the
    matrix edge). Each tile is a maximum-weight bipartite b-matching, a
    transportation problem whose LP relaxation is totally unimodular, so the LP
    optimum is integral and min-cost flow solves it exactly.

    Parameters
    ----------
    W : array_like, shape (rows, cols)
        Real weights (numpy array or torch tensor; float16/32/64 or integer). A
        CUDA tensor is solved on its GPU by Triton kernels and the mask returned
        there as a ``torch.BoolTensor`` (:func:`transmask.solvers.gpu.optimal_mask_torch`;
        ``method="exact"``; other methods copy to the host and back).
        Any non-negative importance matrix (e.g. ``|W| * activation_norms``) may be
        passed instead; only magnitudes matter. Not modified.
    n, m : int
        Keep ``n`` of every ``m`` (``1 <= n <= m``); tiles are ``m x m``.
    method : str
        A solver from :func:`available_methods`: ``"exact"`` (default; min-cost
        flow per tile in Numba, tiles in parallel), ``"approx"`` (the paper's
        greedy 2-approximation, kept magnitude >= 1/2 of the optimum) or ``"lp"``
        (the same problem as a linear program in pulp; a slow reference for small
        inputs).
    keep : {"exactly", "at_most"}
        ``"exactly"`` (default): every full tile keeps exactly ``n`` per tile-row and
        tile-column, so the density is ``n/m``. ``"at_most"``: at most ``n``; this
        can keep strictly more magnitude.

    Returns
    -------
    mask : ndarray of bool, shape (rows, cols)
        ``True`` where the weight is kept. ``mask`` and ``mask.T`` are both N:M.
        For a CUDA tensor: a ``torch.BoolTensor`` on the same device.

    Raises
    ------
    TypeError
        ``W`` is complex, boolean, or not numeric; ``n``/``m`` are not integers.
    ValueError
        ``W`` is not 2-D, empty, or holds NaN/inf; ``n``/``m`` out of range;
        unknown ``method`` or ``keep``.

    Notes
    -----
    Ties are broken deterministically: the same input gives the same mask on
    every run and thread count.

    References
    ----------
    .. [1] I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and
       Efficient Method to Find N:M Transposable Masks", NeurIPS 2021.
    .. [2] R. K. Ahuja, T. L. Magnanti, J. B. Orlin, "Network Flows", 1993, ch. 9
       (successive shortest paths with node potentials).

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> W = np.array([[10, 10, .1], [10, 10, .1], [.1, .1, .1]])
    >>> tm.optimal_mask(W, 2, 3).sum(axis=1)          # exactly 2 per row and column
    array([2, 2, 2])
    >>> round(tm.kept_l1(W, tm.optimal_mask(W, 2, 3, keep="at_most")), 1)
    40.1
    """
    if _is_cuda_tensor(W):  # solved on the GPU, and the mask stays there
        from .solvers.gpu import optimal_mask_torch

        return optimal_mask_torch(W, n, m, method=method, keep=keep)
    n, m = check_nm(n, m)
    keep = check_keep(keep)
    solver = solvers.get(method)
    with describing(*_kernels_to_compile(method, keep, m, W)):
        A = as_weight_matrix(W)
        if n == m:
            return np.ones(A.shape, dtype=bool)
        mask = solver(A, n, m, keep)
    assert mask.shape == A.shape and mask.dtype == np.bool_
    return mask


def _kernels_to_compile(method: str, keep: str, m: int, W) -> tuple[str, int]:
    """What a cold first call of :func:`optimal_mask` compiles, and about how long it takes (see ``_compile_notice``)."""
    if method == "approx":
        return "approximation's kernels", 15
    if method != "exact":
        return "input checks", 2
    try:
        R, C = np.shape(W)
    except (ValueError, TypeError):
        return "exact solver's kernels", 15
    patterns = keep == "exactly" and m <= solvers.module("exact").ENUMERATE_MAX_M and R >= m and C >= m
    if patterns and R % m == 0 and C % m == 0:
        return "exact solver's pattern-search kernels", 5
    return ("exact solver's pattern-search and min-cost-flow kernels", 20) if patterns else ("exact solver's min-cost-flow kernels", 15)


def nm_mask(W, n: int, m: int) -> np.ndarray:
    r"""Plain (row-wise) N:M mask: the ``n`` largest magnitudes of every ``m`` consecutive entries of a row.

    For every row ``i`` and group ``g`` of columns ``gm .. gm+m-1``,

    .. math:: \max_{x} \sum_j |W_{ij}|\, x_{ij} \quad\text{s.t.}\quad \sum_{j \in g} x_{ij} = n,

    solved by keeping the group's top-n. This is the usual N:M mask (e.g.
    NVIDIA's 2:4): ``mask`` is N:M, but ``mask.T`` in general is not, so it
    keeps at least as much magnitude as :func:`optimal_mask` (a relaxation of
    the transposable problem) and is its natural baseline.

    Parameters
    ----------
    W : array_like, shape (rows, cols)
        Real weights or importances, as for :func:`optimal_mask`. Not modified.
    n, m : int
        Keep ``n`` of every ``m`` consecutive entries of a row (``1 <= n <= m``).

    Returns
    -------
    mask : ndarray of bool, shape (rows, cols)
        Groups cut by the right edge keep their ``min(n, length)`` largest.
        Ties go to the lower column index.

    Raises
    ------
    TypeError, ValueError
        As :func:`optimal_mask` for ``W``, ``n`` and ``m``.

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> tm.nm_mask(np.array([[1., -4., 3., 2.]]), 2, 4)
    array([[False,  True,  True, False]])
    """
    n, m = check_nm(n, m)
    with describing("row-wise N:M kernels", 6):
        A = as_weight_matrix(W)
        if n == m:
            return np.ones(A.shape, dtype=bool)
        return rowwise_topn(A, n, m)


def _group_counts(mask: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept per group of ``m`` consecutive entries of each row, and each group's length (no m-sized padding)."""
    R, C = mask.shape
    starts = np.arange(0, C, m)
    counts = np.add.reduceat(mask, starts, axis=1, dtype=np.int64)
    lengths = np.minimum(starts + m, C) - starts
    return counts, lengths


def is_nm(mask, n: int, m: int, keep: str = "exactly") -> bool:
    r"""Whether ``mask`` is (row-wise) N:M: every group of ``m`` consecutive entries of a row keeps ``n``.

    With groups ``g`` of columns ``gm .. gm+m-1`` of each row ``i``, the test is

    .. math:: \sum_{j \in g} M_{ij} = n \;\text{(full groups, keep="exactly")},
              \qquad \sum_{j \in g} M_{ij} \le n \;\text{(keep="at_most", and groups cut by the edge)}.

    Apply it to ``mask.T`` for the column groups.

    Parameters
    ----------
    mask : array_like of bool or 0/1, shape (rows, cols)
        The mask to check (numpy array or CPU torch tensor).
    n, m : int
        ``1 <= n <= m``.
    keep : {"exactly", "at_most"}
        ``"exactly"`` (default, as in :func:`optimal_mask`): full groups keep
        exactly ``n``; ``"at_most"``: at most ``n``. Groups cut by the right
        edge keep at most ``n`` in both modes.

    Returns
    -------
    bool

    Raises
    ------
    TypeError
        ``mask`` is not boolean or 0/1 numbers; ``n``/``m`` are not integers.
    ValueError
        ``mask`` is not 2-D, is empty (as ``W`` is for :func:`optimal_mask`),
        or holds values other than 0/1; ``n``/``m``/``keep`` out of range.

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> M = np.array([[1, 1, 0, 0, 1, 0, 1, 0]], dtype=bool)
    >>> tm.is_nm(M, 2, 4)
    True
    >>> tm.is_nm(M[:, :6] & [[1, 0, 1, 1, 1, 1]], 2, 4)   # first group keeps 1 of 4
    False
    >>> tm.is_nm(M[:, :6] & [[1, 0, 1, 1, 1, 1]], 2, 4, keep="at_most")
    True
    """
    n, m = check_nm(n, m)
    keep = check_keep(keep)
    M = as_mask(mask, allow_empty=False)
    counts, lengths = _group_counts(M, m)
    if (counts > n).any():
        return False
    if keep == "exactly":
        full = lengths == m
        return bool((counts[:, full] == n).all())
    return True


def is_transposable(mask, n: int, m: int, keep: str = "exactly") -> bool:
    r"""Whether ``mask`` is transposable N:M: every ``m x m`` tile keeps ``n`` per tile-row and tile-column.

    For every tile :math:`T` (rows and columns cut from ``(0, 0)`` in steps of ``m``),

    .. math:: \sum_{j \in T} M_{ij} = n \;\forall i \in T, \qquad \sum_{i \in T} M_{ij} = n \;\forall j \in T

    with ``=`` for full tiles under ``keep="exactly"`` and ``<=`` under
    ``keep="at_most"`` and in tiles cut by the matrix edge. Then ``mask`` and
    ``mask.T`` are both N:M.

    Parameters
    ----------
    mask, n, m
        As for :func:`is_nm`: a 2-D boolean or 0/1 mask and ``1 <= n <= m``.
    keep : {"exactly", "at_most"}
        ``"exactly"`` (default, as in :func:`optimal_mask`) or ``"at_most"``.

    Returns
    -------
    bool

    Raises
    ------
    TypeError, ValueError
        As :func:`is_nm`.

    Notes
    -----
    One parallel pass over the mask; memory is a few counts per tile-row and
    tile-column, also when ``m`` exceeds the matrix (then the matrix is one
    tile cut by the edge).

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> M = tm.optimal_mask(np.random.default_rng(0).standard_normal((8, 8)), 2, 4)
    >>> tm.is_transposable(M, 2, 4), tm.is_nm(M, 2, 4), tm.is_nm(M.T, 2, 4)
    (True, True, True)
    >>> tm.is_transposable(np.zeros((8, 8), bool), 2, 4)        # keeps too few
    False
    >>> tm.is_transposable(np.zeros((8, 8), bool), 2, 4, keep="at_most")
    True
    """
    n, m = check_nm(n, m)
    keep = check_keep(keep)
    M = as_mask(mask, allow_empty=False)
    with describing("mask checks", 1):
        rc, rl, cc, cl = tile_counts(M, m)
    if (rc > n).any() or (cc > n).any():
        return False
    if keep == "exactly":
        full = (rl == m).all(axis=2) & (cl == m).all(axis=2)
        return bool((rc[full] == n).all() and (cc[full] == n).all())
    return True


def kept_l1(W, mask) -> float:
    r"""Kept magnitude of a mask: :math:`\sum_{ij} |W_{ij}|\, M_{ij}`, accumulated in float64.

    The objective :func:`optimal_mask` maximises; compare masks by it (or by
    its share of ``sum |W|``, see :func:`mask_stats`).

    Parameters
    ----------
    W : array_like, shape (rows, cols)
        Weights or importances (NaN/inf are not rejected here: they propagate).
    mask : array_like of bool or 0/1, shape (rows, cols)

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        Bad ``W`` or ``mask`` (as in :func:`optimal_mask` and :func:`is_nm`),
        or shapes that differ.

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> tm.kept_l1(np.array([[1., -2.], [3., 4.]]), np.array([[0, 1], [1, 0]]))
    5.0
    """
    A = as_weight_matrix(W, check_finite=False)
    M = as_mask(mask, allow_empty=False)
    if A.shape != M.shape:
        raise ValueError(f"W has shape {A.shape} but mask has shape {M.shape}")
    return float(np.abs(A[M], dtype=np.float64).sum()) if A.dtype != np.float64 else float(np.abs(A[M]).sum())


@dataclass(frozen=True)
class MaskStats:
    """Statistics of a mask on a weight matrix, as returned by :func:`mask_stats`.

    Attributes
    ----------
    kept_l1 : float
        ``sum(|W| * mask)`` (:func:`kept_l1`).
    total_l1 : float
        ``sum(|W|)``.
    kept_fraction_l1 : float
        ``kept_l1 / total_l1`` (1.0 for an all-zero ``W``).
    density : float
        Share of entries kept.
    fraction_of_optimum : float or None
        ``kept_l1 / optimum`` when an optimum was given (``inf`` for a zero
        optimum and a positive ``kept_l1``, 1.0 when both are zero).
    short_tile_rows, short_tile_cols : int
        Tile-rows (tile-columns) that keep fewer than ``min(n, real entries)``.
    over_tile_rows, over_tile_cols : int
        Tile-rows (tile-columns) that keep more than ``n``.
    is_nm, is_transposable : bool
        :func:`is_nm` and :func:`is_transposable` in the counting mode ``keep``.
    keep : str
        The counting mode of the two checks.

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> s = tm.mask_stats(np.ones((4, 4)), np.eye(4, dtype=bool), 1, 2)
    >>> s.density, s.is_transposable, s.short_tile_rows
    (0.25, False, 4)
    >>> sorted(s.as_dict())[:3]
    ['density', 'fraction_of_optimum', 'is_nm']
    """

    kept_l1: float
    total_l1: float
    kept_fraction_l1: float
    density: float
    fraction_of_optimum: float | None
    short_tile_rows: int
    short_tile_cols: int
    over_tile_rows: int
    over_tile_cols: int
    is_nm: bool
    is_transposable: bool
    keep: str = "exactly"

    def as_dict(self) -> dict:
        """The fields as a plain dict (e.g. for JSON)."""
        return asdict(self)


def mask_stats(W, mask, n: int, m: int, optimum: float | None = None, keep: str = "exactly") -> MaskStats:
    """Kept L1, density, fraction of a given optimum, and the tile-rows/columns short of (or over) ``n``.

    Parameters
    ----------
    W : array_like, shape (rows, cols)
        The weights the mask was computed for.
    mask : array_like of bool or 0/1, shape (rows, cols)
        The mask to describe.
    n, m : int
        The N:M pattern the mask should follow.
    optimum : float, optional
        The optimal kept L1 (e.g. ``kept_l1(W, optimal_mask(W, n, m))``), a
        finite number >= 0; when given, ``fraction_of_optimum = kept_l1 / optimum``.
    keep : {"exactly", "at_most"}
        Counting mode of the ``is_nm``/``is_transposable`` fields (default
        ``"exactly"``, as everywhere).

    Returns
    -------
    MaskStats

    Raises
    ------
    TypeError
        ``optimum`` is not a real number; bad ``W``/``mask``/``n``/``m`` as in
        :func:`kept_l1` and :func:`is_nm`.
    ValueError
        ``optimum`` is negative, NaN or infinite; shapes differ.

    Notes
    -----
    A tile-row is *short* when it keeps fewer than ``min(n, real entries)``;
    *over* when it keeps more than ``n``. Tiles cut by the matrix edge count too.

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> W = np.random.default_rng(0).standard_normal((8, 8))
    >>> best = tm.kept_l1(W, tm.optimal_mask(W, 2, 4))
    >>> s = tm.mask_stats(W, tm.optimal_mask(W, 2, 4, method="approx"), 2, 4, optimum=best)
    >>> s.is_transposable, 0.5 <= s.fraction_of_optimum <= 1.0, s.density
    (True, True, 0.5)
    """
    n, m = check_nm(n, m)
    keep = check_keep(keep)
    frac_opt = None if optimum is None else check_optimum(optimum)
    A = as_weight_matrix(W, check_finite=False)
    M = as_mask(mask, allow_empty=False)
    if A.shape != M.shape:
        raise ValueError(f"W has shape {A.shape} but mask has shape {M.shape}")
    kept = kept_l1(A, M)
    total = float(np.abs(A, dtype=np.float64).sum()) if A.dtype != np.float64 else float(np.abs(A).sum())
    with describing("mask checks", 1):
        rc, rl, cc, cl = tile_counts(M, m)
    need_r = np.minimum(rl, n)
    need_c = np.minimum(cl, n)
    if frac_opt is not None:
        frac_opt = kept / frac_opt if frac_opt > 0 else (1.0 if kept == 0 else float("inf"))
    return MaskStats(
        kept_l1=kept,
        total_l1=total,
        kept_fraction_l1=kept / total if total > 0 else 1.0,
        density=float(M.mean()),
        fraction_of_optimum=frac_opt,
        short_tile_rows=int((rc < need_r).sum()),
        short_tile_cols=int((cc < need_c).sum()),
        over_tile_rows=int((rc > n).sum()),
        over_tile_cols=int((cc > n).sum()),
        is_nm=is_nm(M, n, m, keep=keep),
        is_transposable=is_transposable(M, n, m, keep=keep),
        keep=keep,
    )


def tile_kept_l1(W, mask, m: int) -> np.ndarray:
    r"""Kept magnitude of every ``m x m`` tile: ``out[a, b] = sum(|W| * mask)`` over tile ``(a, b)``.

    .. math::

        \mathrm{out}_{ab} = \sum_{i=am}^{am+m-1} \sum_{j=bm}^{bm+m-1} |W_{ij}|\, M_{ij}

    The per-tile view of :func:`kept_l1` (which is ``tile_kept_l1(W, mask, m).sum()``):
    divide by the same quantity for an optimal mask to see which tiles a heuristic
    or a peer solves worse than the optimum. Tiles cut by the matrix edge sum their
    real entries. Accumulated in float64, a bounded number of tile-rows at a time
    (no full float64 copy of ``W``).

    Parameters
    ----------
    W : array_like, shape (rows, cols)
        Weights (or importances); only magnitudes matter.
    mask : array_like of bool, shape (rows, cols)
        The mask to score.
    m : int
        Tile side.

    Returns
    -------
    ndarray of float64, shape (ceil(rows / m), ceil(cols / m))

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> W = np.arange(16.0).reshape(4, 4)
    >>> tm.tile_kept_l1(W, tm.optimal_mask(W, 1, 2), 2)
    array([[ 5.,  9.],
           [21., 25.]])
    """
    _, m = check_nm(1, m)
    A = as_weight_matrix(W, check_finite=False)
    M = as_mask(mask)
    if A.shape != M.shape:
        raise ValueError(f"W has shape {A.shape} but mask has shape {M.shape}")
    R, C = A.shape
    gr, gc = -(-R // m), -(-C // m)
    mr, mc = min(m, R), min(m, C)  # a tile's real extent (smaller than m only for a matrix smaller than a tile)
    out = np.empty((gr, gc), dtype=np.float64)
    step = max(1, (1 << 22) // (mr * gc * mc))  # tile-rows per chunk: float64 temporaries of at most 32 MB
    for a in range(0, gr, step):
        b = min(gr, a + step)
        rows = slice(a * m, min(R, b * m))
        block = np.abs(A[rows], dtype=np.float64) * M[rows]
        if block.shape != ((b - a) * mr, gc * mc):  # tiles cut by the edge: pad with zeros
            block = np.pad(block, ((0, (b - a) * mr - block.shape[0]), (0, gc * mc - C)))
        out[a:b] = block.reshape(b - a, mr, gc, mc).sum(axis=(1, 3))
    return out
