"""Sorting networks: fixed compare-exchange sequences that sort many small arrays in SIMD lanes.

A sorting network for ``k`` keys is a list of pairs ``(a, b)``; applying
``(key[a], key[b]) = (min, max)`` for every pair in order sorts any ``k`` keys.
Because the sequence does not depend on the data, one network can sort many
independent arrays side by side: :func:`sort_lanes` stores them as the columns
("lanes") of a ``(k, lanes)`` array and applies every compare-exchange to all
lanes at once, branch-free, which LLVM turns into SIMD instructions. Both
solvers use it: the exact solver sorts the rows and columns of a chunk of tiles
to compute dual prices (:mod:`._dual_prices`), the approximation sorts the
packed keys of a chunk of tiles (:mod:`.approx`).

Reference: D. E. Knuth, *The Art of Computer Programming*, vol. 3, sec. 5.3.4
(Batcher's odd-even merge sort).
"""
from __future__ import annotations

from functools import lru_cache

import numba as nb
import numpy as np
from numba.core import types
from numba.extending import overload


@lru_cache(maxsize=None)
def sorting_network(k: int) -> np.ndarray:
    """Compare-exchange pairs ``(a, b)``, ``a < b``, of Batcher's odd-even merge sort for k keys.

    Applying ``(key[a], key[b]) = (min, max)`` for every pair in order sorts any
    k keys ascending. Built for the next power of two ``p`` and pruned to pairs
    inside ``range(k)`` (padding keys would sit at the top as +inf and never
    move). Merging two sorted runs of ``size`` keys compares keys ``stride``
    apart, for ``stride = size, size/2, ..., 1``; below the first stride only the
    pairs that straddle two sub-runs of ``stride`` keys (odd ones) are needed.
    Built once per k (about 24 ms in Python for k = 1024) and returned read-only.

    >>> sorting_network(4).tolist()
    [[0, 1], [2, 3], [0, 2], [1, 3], [1, 2]]
    """
    p = 1
    while p < k:
        p *= 2
    pairs = []
    size = 1
    while size < p:  # merge sorted runs of ``size`` keys into runs of 2 * size
        stride = size
        while stride >= 1:
            for start in range(0, p, 2 * size):
                for i in range(start, start + 2 * size - stride):
                    if stride == size or ((i - start) // stride) % 2 == 1:
                        pairs.append((i, i + stride))
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


def compare_exchange(lo, hi):
    """``(min(lo, hi), max(lo, hi))`` without a branch (compiled: see the overload below)."""
    return (lo, hi) if lo <= hi else (hi, lo)


@overload(compare_exchange, inline="always")
def _compare_exchange_compiled(lo, hi):
    # Floats: fmin/fmax vectorise to vminpd/vmaxpd (Python's min/max semantics did
    # not: 0.53 vs 0.86 ns per compare-exchange and lane). Integers: an xor swap
    # under a compare mask, two loads, five vector ALU operations and two full
    # stores (min/max let LLVM emit masked stores, about twice as slow).
    if isinstance(lo, types.Integer):

        def exchange_int(lo, hi):
            d = (lo ^ hi) & -np.int64(hi < lo)
            return lo ^ d, hi ^ d

        return exchange_int

    def exchange_float(lo, hi):
        return np.fmin(lo, hi), np.fmax(lo, hi)

    return exchange_float


@nb.njit(cache=True, nogil=True, inline="always")
def sort_lanes(S, net, lanes):
    """Sort every lane ``S[:, t]``, ``t < lanes``, ascending with the compare-exchange pairs ``net``.

    Each compare-exchange is applied to all lanes at once, branch-free, so the
    lanes (rows or columns of a chunk of tiles, or the keys of a chunk of
    tiles) are sorted side by side in SIMD registers. Works for float and
    integer ``S``; NaN-free floats only.
    """
    for q in range(net.shape[0]):
        Sa = S[net[q, 0]]
        Sb = S[net[q, 1]]
        for t in range(lanes):
            Sa[t], Sb[t] = compare_exchange(Sa[t], Sb[t])
