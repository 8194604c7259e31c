"""Test helpers (not a test module): valid N:M and transposable N:M masks built directly.

Independent of the solvers: a transposable tile is a sum of ``n`` distinct
cyclic shifts of the identity (exactly ``n`` per tile-row and tile-column), with
random row and column permutations; tiles cut by the matrix edge keep the
corresponding sub-block (at most ``n`` per tile-row/column).
"""
from __future__ import annotations

import numpy as np


def transposable_mask(rows: int, cols: int, n: int, m: int, rng, drop: float = 0.0) -> np.ndarray:
    """Random transposable n:m mask; ``drop`` > 0 removes that fraction of kept entries (at-most-n masks)."""
    M = np.zeros((rows, cols), dtype=bool)
    ar = np.arange(m)
    for i in range(0, rows, m):
        for j in range(0, cols, m):
            tile = np.zeros((m, m), dtype=bool)
            for k in rng.choice(m, n, replace=False):
                tile[ar, (ar + k) % m] = True
            tile = tile[rng.permutation(m)][:, rng.permutation(m)]
            h, w = min(m, rows - i), min(m, cols - j)
            M[i:i + h, j:j + w] = tile[:h, :w]
    if drop:
        M &= rng.random(M.shape) >= drop
    return M


def nm_row_mask(rows: int, cols: int, n: int, m: int, rng, at_most: bool = False) -> np.ndarray:
    """Random row-wise n:m mask (not transposable); ``at_most`` keeps 0..n per group, including empty groups."""
    M = np.zeros((rows, cols), dtype=bool)
    for r in range(rows):
        for g in range(0, cols, m):
            L = min(m, cols - g)
            k = int(rng.integers(0, min(n, L) + 1)) if at_most else min(n, L)
            M[r, g + rng.choice(L, k, replace=False)] = True
    return M


def slot_validity(c, mask):
    """Which slots of a compressed matrix hold a kept entry, read from the mask at each slot's column.

    Independent of the padding decoding in ``transmask.sparse`` (and exact for ``n = 1``,
    where the index fields alone cannot tell an empty group from one keeping position 0).
    Returns a bool torch tensor shaped like ``c.values``.
    """
    import torch

    idx = torch.as_tensor(np.asarray(c.unpacked_indices().cpu() if hasattr(c.unpacked_indices(), "cpu")
                                     else c.unpacked_indices()), dtype=torch.int64)
    cols = idx + (torch.arange(c.slots) // c.n * c.m)[None, :]
    padded = torch.zeros((c.shape[0], c.groups * c.m), dtype=torch.bool)
    padded[:, :c.shape[1]] = torch.as_tensor(np.asarray(mask, dtype=bool))
    return torch.gather(padded, 1, cols)
