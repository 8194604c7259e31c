"""The paper's greedy 2-approximation, vectorised in numpy over all tiles at once.

Hubara et al. (NeurIPS 2021), Algorithm "2-approximation": inside every ``m x m``
tile, visit the entries from the largest magnitude to the smallest and keep an
entry when its tile-row and its tile-column both hold fewer than ``n`` kept
entries. The kept magnitude is at least 1/2 of the optimum (it is a greedy
b-matching). It can leave tile-rows/columns short of ``n``, so its masks are
transposable with ``keep="at_most"`` only; nothing here completes them.

The port has no per-tile Python loop: one ``argsort`` of a ``(tiles, m*m)`` array
gives every tile's visiting order (stable: ties go to the lower row-major index
inside the tile), then a loop over the ``m*m`` positions updates the row/column
counters of all tiles with vectorised fancy indexing. Tiles are processed in
chunks of a few million weights to bound memory.
"""
from __future__ import annotations

import numpy as np

from ._tiles import from_tiles, iter_tile_chunks, tile_targets, to_tiles

__all__ = ["greedy_mask", "greedy_tiles"]


def greedy_tiles(scores: np.ndarray, n: int, row_cap=None, col_cap=None) -> np.ndarray:
    """Greedy selection on a ``(tiles, m, m)`` array of non-negative scores (negative = padding, never kept).

    Entries are visited by descending score (ties: lower row-major index first) and
    kept while their row holds fewer than ``row_cap`` and their column fewer than
    ``col_cap`` (both default to ``n``; arrays shaped ``(tiles, m)`` allowed).
    Returns a bool array shaped like ``scores``.
    """
    T, m, _ = scores.shape
    flat = scores.reshape(T, m * m)
    order = np.argsort(-flat, axis=1, kind="stable")
    # Counters of all tiles live in flat arrays; tile t's row r is counter t*m + r.
    # Position-major (m*m, T) index arrays make every step of the loop below contiguous.
    base = (np.arange(T, dtype=np.int64) * m)[:, None]
    ri_all = np.ascontiguousarray((base + order // m).T)
    ci_all = np.ascontiguousarray((base + order % m).T)
    padded = bool((flat < 0).any())
    if padded:
        real_all = np.ascontiguousarray(np.take_along_axis(flat, order, axis=1).T >= 0)
    rc = np.zeros(T * m, dtype=np.int32)
    cc = np.zeros(T * m, dtype=np.int32)
    rcap = None if row_cap is None else np.asarray(row_cap, dtype=np.int32).reshape(-1)
    ccap = None if col_cap is None else np.asarray(col_cap, dtype=np.int32).reshape(-1)
    kept_sorted = np.empty((m * m, T), dtype=bool)
    for p in range(m * m):
        ri = ri_all[p]
        ci = ci_all[p]
        ok = (rc[ri] < (n if rcap is None else rcap[ri])) & (cc[ci] < (n if ccap is None else ccap[ci]))
        if padded:
            ok &= real_all[p]
        kept_sorted[p] = ok
        # ri (and ci) are distinct across tiles at a given position, so the buffered += is exact
        rc[ri] += ok
        cc[ci] += ok
    keep = np.zeros((T, m * m), dtype=bool)
    np.put_along_axis(keep, order, kept_sorted.T, axis=1)
    return keep.reshape(T, m, m)


def greedy_mask(W, n: int, m: int, max_chunk_elements: int = 1 << 20) -> np.ndarray:
    """The paper's greedy mask of ``W`` (bool, shaped like ``W``); transposable with ``keep="at_most"``.

    Tiles cut by the matrix edge keep at most ``n`` per tile-row/column among their real entries.
    """
    A = np.asarray(W)
    if A.ndim != 2:
        raise ValueError("W must be 2-D")
    tiles = to_tiles(A, m, fill=-1.0, dtype=np.float32 if A.dtype == np.float32 else np.float64)
    T = tiles.shape[0]
    out = np.empty(tiles.shape, dtype=bool)
    edge = A.shape[0] % m or A.shape[1] % m
    rt, ct = tile_targets(A.shape, n, m) if edge else (None, None)
    for sl in iter_tile_chunks(T, m, max_chunk_elements):
        out[sl] = greedy_tiles(tiles[sl], n, None if rt is None else rt[sl], None if ct is None else ct[sl])
    return from_tiles(out, A.shape, m)
