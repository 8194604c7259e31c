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
from ._validation import as_mask, as_weight_matrix, check_keep, check_nm

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
    """Names of the registered solvers for :func:`optimal_mask` and a one-line description of each."""
    return {name: spec.description for name, spec in solvers.REGISTRY.items()}


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
        Real weights (numpy array or CPU torch tensor; float16/32/64 or integer).
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
    n, m = check_nm(n, m)
    keep = check_keep(keep)
    solver = solvers.get(method)
    A = as_weight_matrix(W)
    if n == m:
        return np.ones(A.shape, dtype=bool)
    mask = solver(A, n, m, keep)
    assert mask.shape == A.shape and mask.dtype == np.bool_
    return mask


def nm_mask(W, n: int, m: int) -> np.ndarray:
    """Plain (row-wise) N:M mask: the ``n`` largest magnitudes of every ``m`` consecutive entries of a row.

    This is the usual N:M mask (e.g. NVIDIA's 2:4); it is *not* transposable in
    general. Groups cut by the right edge keep their ``min(n, len)`` largest.
    Ties go to the lower column index.

    Examples
    --------
    >>> import numpy as np, transmask as tm
    >>> tm.nm_mask(np.array([[1., -4., 3., 2.]]), 2, 4)
    array([[False,  True,  True, False]])
    """
    n, m = check_nm(n, m)
    A = as_weight_matrix(W)
    if n == m:
        return np.ones(A.shape, dtype=bool)
    from .solvers._rowwise import rowwise_topn

    return rowwise_topn(A, n, m)


def _group_counts(mask: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    R, C = mask.shape
    G = -(-C // m)
    padded = np.zeros((R, G * m), dtype=np.uint8)
    padded[:, :C] = mask
    counts = padded.reshape(R, G, m).sum(axis=2, dtype=np.int64)
    lengths = np.full(G, m, dtype=np.int64)
    lengths[-1] = C - (G - 1) * m
    return counts, lengths


def is_nm(mask, n: int, m: int, keep: str = "at_most") -> bool:
    """True when every group of ``m`` consecutive entries of each row keeps at most ``n``.

    With ``keep="exactly"``, full groups must keep exactly ``n`` (groups cut by
    the right edge at most ``n``).
    """
    n, m = check_nm(n, m)
    keep = check_keep(keep)
    M = as_mask(mask)
    counts, lengths = _group_counts(M, m)
    if (counts > n).any():
        return False
    if keep == "exactly":
        full = lengths == m
        return bool((counts[:, full] == n).all())
    return True


def is_transposable(mask, n: int, m: int, keep: str = "at_most") -> bool:
    """True when every ``m x m`` tile keeps at most ``n`` per tile-row and tile-column.

    Then ``mask`` and ``mask.T`` are both N:M. With ``keep="exactly"``, every full
    tile must keep exactly ``n`` per tile-row and tile-column (tiles cut by the
    matrix edge at most ``n``).
    """
    n, m = check_nm(n, m)
    keep = check_keep(keep)
    M = as_mask(mask)
    rc, rl, cc, cl = tile_counts(M, m)
    if (rc > n).any() or (cc > n).any():
        return False
    if keep == "exactly":
        full = (rl == m).all(axis=2) & (cl == m).all(axis=2)
        return bool((rc[full] == n).all() and (cc[full] == n).all())
    return True


def kept_l1(W, mask) -> float:
    """Kept magnitude ``sum(|W| * mask)``, accumulated in float64."""
    A = as_weight_matrix(W, check_finite=False)
    M = as_mask(mask)
    if A.shape != M.shape:
        raise ValueError(f"W has shape {A.shape} but mask has shape {M.shape}")
    return float(np.abs(A[M], dtype=np.float64).sum()) if A.dtype != np.float64 else float(np.abs(A[M]).sum())


@dataclass(frozen=True)
class MaskStats:
    """Statistics of a mask on a weight matrix (see :func:`mask_stats`)."""

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

    def as_dict(self) -> dict:
        return asdict(self)


def mask_stats(W, mask, n: int, m: int, optimum: float | None = None) -> MaskStats:
    """Kept L1, density, fraction of a given optimum, and the tile-rows/columns short of (or over) ``n``.

    Parameters
    ----------
    W : array_like
        The weights the mask was computed for.
    mask : array_like of bool
        The mask to describe.
    n, m : int
        The N:M pattern the mask should follow.
    optimum : float, optional
        The optimal kept L1 (e.g. ``kept_l1(W, optimal_mask(W, n, m))``); when
        given, ``fraction_of_optimum = kept_l1 / optimum``.

    Notes
    -----
    A tile-row is *short* when it keeps fewer than ``min(n, real entries)``;
    *over* when it keeps more than ``n``. Tiles cut by the matrix edge count too.
    """
    n, m = check_nm(n, m)
    A = as_weight_matrix(W, check_finite=False)
    M = as_mask(mask)
    if A.shape != M.shape:
        raise ValueError(f"W has shape {A.shape} but mask has shape {M.shape}")
    kept = kept_l1(A, M)
    total = float(np.abs(A, dtype=np.float64).sum()) if A.dtype != np.float64 else float(np.abs(A).sum())
    rc, rl, cc, cl = tile_counts(M, m)
    need_r = np.minimum(rl, n)
    need_c = np.minimum(cl, n)
    frac_opt = None
    if optimum is not None:
        frac_opt = kept / optimum if optimum > 0 else (1.0 if kept == 0 else float("inf"))
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
        is_nm=is_nm(M, n, m),
        is_transposable=is_transposable(M, n, m),
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
    out = np.empty((gr, gc), dtype=np.float64)
    step = max(1, (1 << 22) // (m * gc * m))  # tile-rows per chunk: float64 temporaries of at most 32 MB
    for a in range(0, gr, step):
        b = min(gr, a + step)
        rows = slice(a * m, min(R, b * m))
        block = np.abs(A[rows], dtype=np.float64) * M[rows]
        if block.shape != ((b - a) * m, gc * m):  # tiles cut by the edge: pad with zeros
            block = np.pad(block, ((0, (b - a) * m - block.shape[0]), (0, gc * m - C)))
        out[a:b] = block.reshape(b - a, m, gc, m).sum(axis=(1, 3))
    return out
