"""Small compiled helpers: finiteness scan and per-group / per-tile counts."""
from __future__ import annotations

import numba as nb
import numpy as np


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


def tile_counts(mask: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kept counts per tile-row and tile-column, and how many real entries each has.

    Returns ``(row_counts, row_len, col_counts, col_len)``: ``row_counts[ti, tj, r]``
    is the number kept in tile-row ``r`` of tile ``(ti, tj)`` and ``row_len`` the
    number of real (not padding) entries of that tile-row; likewise for columns
    (``col_counts[ti, tj, c]``). Tile-rows that lie entirely beyond the matrix edge
    have length 0.
    """
    R, C = mask.shape
    TR, TC = -(-R // m), -(-C // m)
    padded = np.zeros((TR * m, TC * m), dtype=np.uint8)
    padded[:R, :C] = mask
    tiles = padded.reshape(TR, m, TC, m)
    row_counts = tiles.sum(axis=3, dtype=np.int64).transpose(0, 2, 1)  # (TR, TC, m)
    col_counts = tiles.sum(axis=1, dtype=np.int64)  # (TR, TC, m)
    real = np.zeros((TR * m, TC * m), dtype=np.uint8)
    real[:R, :C] = 1
    rtiles = real.reshape(TR, m, TC, m)
    row_len = rtiles.sum(axis=3, dtype=np.int64).transpose(0, 2, 1)
    col_len = rtiles.sum(axis=1, dtype=np.int64)
    return row_counts, row_len, col_counts, col_len
