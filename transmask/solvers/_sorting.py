"""Sorting networks: fixed compare-exchange sequences that sort many small arrays in SIMD lanes."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def sorting_network(k: int) -> np.ndarray:
    """Compare-exchange pairs ``(a, b)``, ``a < b``, of Batcher's odd-even merge sort for k keys.

    Applying ``(key[a], key[b]) = (min, max)`` for every pair in order sorts any
    k keys ascending. Built for the next power of two and pruned to pairs inside
    ``range(k)`` (padding keys would sit at the top as +inf and never move).
    Knuth, TAOCP vol. 3, sec. 5.3.4. Built once per k (about 24 ms in Python for k = 1024)
    and returned read-only.

    >>> sorting_network(4).tolist()
    [[0, 1], [2, 3], [0, 2], [1, 3], [1, 2]]
    """
    p = 1
    while p < k:
        p *= 2
    pairs = []
    size = 1
    while size < p:
        stride = size
        while stride >= 1:
            for start in range(0, p, 2 * size):
                for i in range(start, start + 2 * size - stride):
                    j = i + stride
                    if j < start + 2 * size and (i - start) // (2 * size) == (j - start) // (2 * size):
                        if stride == size or ((i - start) // stride) % 2 == 1:
                            if (i // (2 * size)) == (j // (2 * size)):
                                pairs.append((i, j))
            stride //= 2
        size *= 2
    out = np.array([(a, b) for a, b in pairs if b < k], dtype=np.int64).reshape(-1, 2)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=None)
def selection_network(k: int, positions: tuple[int, ...]) -> np.ndarray:
    """The pairs of :func:`sorting_network` that can change the sorted keys at ``positions``.

    Walking the network backwards, a compare-exchange is kept when it touches a
    position whose final value is needed, and then both its positions are
    needed. The kept pairs, in order, leave exactly the sorted keys at
    ``positions`` (the others end in some order). The exact solver needs the
    n-th and (n+1)-th largest of m values: 17 of 19 pairs for 4:8, 53 of 63 for
    8:16, 157 of 191 for 16:32.

    >>> len(selection_network(8, (3, 4)))
    17
    """
    need = set(positions)
    kept = []
    for a, b in sorting_network(k)[::-1].tolist():
        if a in need or b in need:
            kept.append((a, b))
            need.update((a, b))
    out = np.array(kept[::-1], dtype=np.int64).reshape(-1, 2)
    out.flags.writeable = False
    return out
