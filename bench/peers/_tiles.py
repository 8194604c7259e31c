"""Shared helpers for the peers: cut a matrix into ``m x m`` tiles and put a tile mask back.

Every peer works on magnitudes ``|W|`` tile by tile. Tiles are cut from ``(0, 0)``;
tiles cut by the matrix edge are padded up to ``m x m`` with a marker so the
vectorised peers can treat all tiles alike (padded entries are never kept).
"""
from __future__ import annotations

import numpy as np

__all__ = ["grid", "to_tiles", "from_tiles", "iter_tile_chunks", "tile_targets", "per_tile_mask"]


def grid(shape: tuple[int, int], m: int) -> tuple[int, int]:
    """Number of tile rows and tile columns (edge tiles included)."""
    R, C = shape
    return -(-R // m), -(-C // m)


def to_tiles(A: np.ndarray, m: int, fill: float = -1.0, dtype=np.float64) -> np.ndarray:
    """``|A|`` as an array ``(tiles, m, m)`` in row-major tile order; padding entries hold ``fill``."""
    R, C = A.shape
    gr, gc = grid(A.shape, m)
    if R == gr * m and C == gc * m:
        B = np.abs(np.asarray(A, dtype=dtype))
    else:
        B = np.full((gr * m, gc * m), fill, dtype=dtype)
        B[:R, :C] = np.abs(A)
    return B.reshape(gr, m, gc, m).transpose(0, 2, 1, 3).reshape(gr * gc, m, m)


def from_tiles(tile_mask: np.ndarray, shape: tuple[int, int], m: int) -> np.ndarray:
    """Inverse of :func:`to_tiles` for a boolean ``(tiles, m, m)`` array: the mask shaped like ``A``."""
    R, C = shape
    gr, gc = grid(shape, m)
    full = tile_mask.reshape(gr, gc, m, m).transpose(0, 2, 1, 3).reshape(gr * m, gc * m)
    return np.ascontiguousarray(full[:R, :C])


def tile_targets(shape: tuple[int, int], n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per tile and tile-row (column), how many entries a mask must/may keep: ``min(n, real entries)``.

    Returns ``(row_target, col_target)``, each shaped ``(tiles, m)`` (int64), in the
    tile order of :func:`to_tiles`. Padding rows/columns get 0.
    """
    R, C = shape
    gr, gc = grid(shape, m)
    # real rows in each tile-row block and real columns in each tile-column block
    real_rows = np.minimum(m, R - np.arange(gr) * m)  # (gr,)
    real_cols = np.minimum(m, C - np.arange(gc) * m)  # (gc,)
    k = np.arange(m)
    # row i of tile (a, b) is real when i < real_rows[a]; it may keep min(n, real_cols[b]).
    row_t = np.where(k[None, None, :] < real_rows[:, None, None], np.minimum(n, real_cols)[None, :, None], 0)
    col_t = np.where(k[None, None, :] < real_cols[None, :, None], np.minimum(n, real_rows)[:, None, None], 0)
    return row_t.reshape(gr * gc, m).astype(np.int64), col_t.reshape(gr * gc, m).astype(np.int64)


def iter_tile_chunks(T: int, m: int, max_elements: int = 1 << 22):
    """Slices of tile indices covering ``range(T)`` with at most ``max_elements`` weights each."""
    step = max(1, max_elements // (m * m))
    for start in range(0, T, step):
        yield slice(start, min(T, start + step))


def per_tile_mask(W, n: int, m: int, keep: str, solve_tile) -> np.ndarray:
    """Mask of ``W`` from ``solve_tile(|tile|, n, exactly)`` called on every ``m x m`` tile (edge tiles cut).

    The driver of the per-tile Python peers (OR-tools, networkx).
    """
    A = np.abs(np.asarray(W))
    if A.ndim != 2:
        raise ValueError("W must be 2-D")
    gr, gc = grid(A.shape, m)
    out = np.zeros(A.shape, dtype=bool)
    exactly = keep == "exactly"
    for a in range(gr):
        for b in range(gc):
            sl = (slice(a * m, (a + 1) * m), slice(b * m, (b + 1) * m))
            out[sl] = solve_tile(A[sl], n, exactly)
    return out
