"""Small compiled helpers: finiteness scan and per-group / per-tile counts."""
from __future__ import annotations

import numba as nb
import numpy as np

from ._threads import kernel_guard


@nb.njit(parallel=True, cache=True, nogil=True)
def count_nonfinite(A):
    """Number of NaN/inf entries of a C-contiguous 2-D float array (one parallel pass)."""
    rows, cols = A.shape
    bad = 0
    for i in nb.prange(rows):
        row_bad = 0
        for j in range(cols):
            x = A[i, j]
            # x - x is 0 for every finite x and NaN for NaN and +-inf
            if (x - x) != 0.0:
                row_bad += 1
        bad += row_bad
    return bad


@nb.njit(parallel=True, cache=True, nogil=True)
def _tile_counts_kernel(mask, m, row_counts, col_counts):
    R, C = mask.shape
    for ti in nb.prange((R + m - 1) // m):
        for i in range(ti * m, min(ti * m + m, R)):
            r = i - ti * m
            for j in range(C):
                if mask[i, j]:
                    tj = j // m
                    row_counts[ti, tj, r] += 1
                    col_counts[ti, tj, j - tj * m] += 1


def _lengths(size: int, m: int) -> np.ndarray:
    """Whether each position of each tile along one axis is real (not beyond the edge): shape (tiles, min(m, size))."""
    T = -(-size // m)
    pos = np.arange(T)[:, None] * m + np.arange(min(m, size))[None, :]
    return pos < size


def tile_counts(mask: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kept counts per tile-row and tile-column, and how many real entries each has.

    Returns ``(row_counts, row_len, col_counts, col_len)``: ``row_counts[ti, tj, r]``
    is the number kept in tile-row ``r`` of tile ``(ti, tj)`` and ``row_len`` the
    number of real (not padding) entries of that tile-row; likewise for columns
    (``col_counts[ti, tj, c]``). Tile-rows that lie entirely beyond the matrix edge
    have length 0. One parallel pass over the mask, no padded copy. The last
    axis has ``min(m, rows)`` (``min(m, cols)``) positions: a tile never has
    more real rows (columns) than the matrix, so memory does not grow with m.
    """
    R, C = mask.shape
    TR, TC = -(-R // m), -(-C // m)
    row_counts = np.zeros((TR, TC, min(m, R)), dtype=np.int64)
    col_counts = np.zeros((TR, TC, min(m, C)), dtype=np.int64)
    with kernel_guard():
        _tile_counts_kernel(mask, m, row_counts, col_counts)
    rows_real = _lengths(R, m)  # (TR, min(m, R)): is tile-row position real
    cols_real = _lengths(C, m)  # (TC, min(m, C))
    width = cols_real.sum(axis=1)  # real columns of each tile column-block
    height = rows_real.sum(axis=1)
    row_len = rows_real[:, None, :] * width[None, :, None]
    col_len = cols_real[None, :, :] * height[:, None, None]
    return row_counts, row_len.astype(np.int64), col_counts, col_len.astype(np.int64)
