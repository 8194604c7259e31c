"""Row-wise N:M (the usual, non-transposable mask): top-n magnitudes of every m consecutive entries."""
from __future__ import annotations

import numba as nb
import numpy as np

from .._threads import kernel_guard


@nb.njit(parallel=True, cache=True, nogil=True)
def _rowwise_topn_kernel(A, n, m, out):
    rows, cols = A.shape
    groups = (cols + m - 1) // m
    for i in nb.prange(rows):
        for g in range(groups):
            j0 = g * m
            j1 = min(j0 + m, cols)
            # rank of entry j = entries strictly larger, plus equal ones to its left;
            # O(m^2) per group, no sort and no allocation, ties to the lower index.
            for j in range(j0, j1):
                v = abs(A[i, j])
                rank = 0
                for k in range(j0, j1):
                    u = abs(A[i, k])
                    if u > v or (u == v and k < j):
                        rank += 1
                out[i, j] = rank < n


def rowwise_topn(A: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the n largest |A| of every m consecutive entries along each row (A validated, C-contiguous)."""
    out = np.empty(A.shape, dtype=np.bool_)
    with kernel_guard():
        _rowwise_topn_kernel(A, n, m, out)
    return out
