"""Every valid pattern of a small tile, as the 0/1 matrices the GPU pattern kernel scores with one product."""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

#: Entries of a flattened tile in the pattern kernel: ``m * m <= 16`` for ``m <= 4``, and ``tl.dot``
#: needs an inner dimension of at least 16.
TILE_ENTRIES = 16


def _next_pow2(k: int) -> int:
    p = 1
    while p < k:
        p *= 2
    return p


@lru_cache(maxsize=None)
def exact_patterns(n: int, m: int) -> np.ndarray:
    """All ``m x m`` 0/1 matrices with every row and column sum equal to ``n``, as ``(K, m, m)`` uint8.

    ``K`` is OEIS A008300: K(4, 2) = 90, K(4, 1) = K(4, 3) = 24, K(3, 1) = K(3, 2) = 6,
    K(2, 1) = 2. Order: rows' column subsets in lexicographic order (row 0 slowest),
    which is the tie order of the pattern kernel.

    >>> exact_patterns(2, 4).shape
    (90, 4, 4)
    """
    subsets = [np.isin(np.arange(m), cols).astype(np.uint8) for cols in itertools.combinations(range(m), n)]
    out = [np.stack(rows) for rows in itertools.product(subsets, repeat=m) if (np.sum(rows, axis=0) == n).all()]
    arr = np.stack(out)
    arr.flags.writeable = False
    return arr


@lru_cache(maxsize=None)
def pattern_tables(n: int, m: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(scores_matrix, bits, K)`` for the pattern kernel (``m <= 4``).

    ``scores_matrix`` is float32 ``(TILE_ENTRIES, KP)``: column p holds pattern p
    flattened row-major (entry ``r * m + c``), so that ``tile @ scores_matrix``
    gives every pattern's kept magnitude; ``bits`` is uint8 ``(KP, TILE_ENTRIES)``,
    its transpose, read back for the winning pattern. ``KP`` pads the ``K``
    patterns to a power of two of at least 16 (a ``tl.dot`` dimension); the
    padding columns are never chosen (their scores are masked).
    """
    if m * m > TILE_ENTRIES:
        raise ValueError(f"pattern tables are for m <= 4, got m={m}")
    pats = exact_patterns(n, m).reshape(-1, m * m)
    K = pats.shape[0]
    KP = max(16, _next_pow2(K))
    bits = np.zeros((KP, TILE_ENTRIES), dtype=np.uint8)
    bits[:K, : m * m] = pats
    scores = np.ascontiguousarray(bits.T.astype(np.float32))
    for a in (scores, bits):
        a.flags.writeable = False
    return scores, bits, K
