"""Independent oracles for the mask solvers: brute force over all masks of a tiny matrix."""
from __future__ import annotations

import itertools

import numpy as np


def tile_valid(mask: np.ndarray, n: int, m: int, keep: str) -> bool:
    """Contract check written without the library's helpers (plain loops)."""
    R, C = mask.shape
    for i0 in range(0, R, m):
        for j0 in range(0, C, m):
            t = mask[i0 : i0 + m, j0 : j0 + m]
            full = t.shape == (m, m)
            rs, cs = t.sum(axis=1), t.sum(axis=0)
            if (rs > n).any() or (cs > n).any():
                return False
            if full and keep == "exactly" and ((rs != n).any() or (cs != n).any()):
                return False
    return True


def brute_force_best(W: np.ndarray, n: int, m: int, keep: str) -> float:
    """Best kept L1 over every 0/1 mask of W that satisfies the contract (W tiny: <= 16 entries per tile)."""
    A = np.abs(np.asarray(W, dtype=np.float64))
    R, C = A.shape
    total = 0.0
    for i0 in range(0, R, m):
        for j0 in range(0, C, m):
            t = A[i0 : i0 + m, j0 : j0 + m]
            r, c = t.shape
            assert r * c <= 16, "brute force only for tiny tiles"
            bits = np.array(list(itertools.product((0, 1), repeat=r * c)), dtype=np.int64).reshape(-1, r, c)
            rs, cs = bits.sum(axis=2), bits.sum(axis=1)
            ok = (rs <= n).all(axis=1) & (cs <= n).all(axis=1)
            if (r, c) == (m, m) and keep == "exactly":
                ok &= (rs == n).all(axis=1) & (cs == n).all(axis=1)
            vals = (bits[ok] * t).sum(axis=(1, 2))
            total += vals.max()
    return float(total)
