"""Approximate peer: entropy-regularised optimal transport per tile, then greedy rounding.

This follows the idea of TSENOR (Meng et al., "TSENOR: Highly-Efficient Algorithm
for Finding Transposable N:M Sparse Masks", NeurIPS 2025): relax every tile's
b-matching to a capacity-constrained transport plan, solve the entropic version
with cheap matrix scalings (vectorised over all tiles), then round. It is written
here from scratch in numpy (no code from TSENOR) as a CPU peer; TSENOR's own
method runs on GPU and adds refinements not reproduced here.

Per tile with magnitudes ``a`` (scaled to ``[0, 1]`` by the tile maximum):

.. math::

    \\max_X \\; \\langle a, X \\rangle + \\varepsilon H(X) \\quad\\text{s.t.}\\quad
    X\\mathbf 1 = n,\\; X^\\top \\mathbf 1 = n,\\; 0 \\le X \\le 1,

with :math:`H(X) = -\\sum X_{ij}(\\log X_{ij} - 1)`. Its solution is the KL projection
of the Gibbs kernel :math:`K = \\exp((a - 1)/\\varepsilon)` onto the intersection of
the three sets, computed by Dykstra's algorithm with Bregman (KL) projections
(Benamou, Carlier, Cuturi, Nenna, Peyré, SIAM J. Sci. Comput. 2015): per sweep,
scale rows to sum ``n``, scale columns to sum ``n`` (affine sets: no correction
needed), then clip at 1 with the Dykstra correction ``Q``::

    Y = X * Q;  X = min(Y, 1);  Q = Y / X  (= max(Y, 1))

A fixed number of sweeps (``iters``) is run; the plan is then rounded greedily:
entries visited by descending ``X`` and kept while their tile-row and tile-column
hold fewer than ``n`` (the same greedy as :mod:`.numpy_greedy`, on ``X`` instead of
``|W|``). The rounding can leave tile-rows/columns short of ``n``, so masks are
transposable with ``keep="at_most"`` (the bench reports how many are short).
Tiles cut by the matrix edge use row/column targets ``min(n, real entries)``.
"""
from __future__ import annotations

import numpy as np

from ._tiles import from_tiles, iter_tile_chunks, tile_targets, to_tiles
from .numpy_greedy import greedy_tiles

__all__ = ["EPS", "ITERS", "sinkhorn_plan", "sinkhorn_mask"]

EPS = 0.05   # entropic regularisation, relative to the tile's largest magnitude
ITERS = 50   # Dykstra sweeps (row scaling, column scaling, capacity clipping)


def sinkhorn_plan(tiles: np.ndarray, n: int, eps: float = EPS, iters: int = ITERS,
                  row_target=None, col_target=None) -> np.ndarray:
    """Entropic capacity-1 transport plan for a ``(tiles, m, m)`` array of magnitudes (negative = padding)."""
    T, m, _ = tiles.shape
    # float32 halves the memory traffic; the kernel lies in [exp(-1/eps), 1], well inside its range
    f = np.float32
    real = tiles >= 0
    a = np.where(real, tiles, 0.0).astype(f)
    top = a.max(axis=(1, 2), keepdims=True)
    top[top <= 0] = 1.0
    X = np.exp((a / top - f(1.0)) / f(eps))
    X[~real] = 0.0
    r = np.full((T, m), n, dtype=f) if row_target is None else np.asarray(row_target, dtype=f)
    c = np.full((T, m), n, dtype=f) if col_target is None else np.asarray(col_target, dtype=f)
    Q = np.ones_like(X)
    tiny = f(1e-30)
    for _ in range(iters):
        X *= (r / np.maximum(np.einsum("tij->ti", X), tiny))[:, :, None]
        X *= (c / np.maximum(np.einsum("tij->tj", X), tiny))[:, None, :]
        X *= Q
        np.maximum(X, f(1.0), out=Q)
        np.minimum(X, f(1.0), out=X)
    return np.where(real, X, -1.0)


def sinkhorn_mask(W, n: int, m: int, eps: float = EPS, iters: int = ITERS,
                  max_chunk_elements: int = 1 << 18) -> np.ndarray:
    """Mask of ``W`` from entropic OT + greedy rounding (bool, shaped like ``W``; ``keep="at_most"``)."""
    A = np.asarray(W)
    if A.ndim != 2:
        raise ValueError("W must be 2-D")
    tiles = to_tiles(A, m, fill=-1.0)
    T = tiles.shape[0]
    edge = A.shape[0] % m or A.shape[1] % m
    rt, ct = tile_targets(A.shape, n, m) if edge else (None, None)
    out = np.empty(tiles.shape, dtype=bool)
    for sl in iter_tile_chunks(T, m, max_chunk_elements):
        r = None if rt is None else rt[sl]
        c = None if ct is None else ct[sl]
        plan = sinkhorn_plan(tiles[sl], n, eps, iters, r, c)
        out[sl] = greedy_tiles(plan, n, r, c)
    return from_tiles(out, A.shape, m)
