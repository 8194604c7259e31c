r"""Row-wise N:M (the usual, non-transposable mask): top-n magnitudes of every m consecutive entries.

The mask keeps, in every group of ``m`` consecutive entries of a row, the
entries of rank below ``n``, where

.. math:: \operatorname{rank}(j) = \#\{k : |a_k| > |a_j|\} + \#\{k < j : |a_k| = |a_j|\}

(larger magnitude first, ties to the lower column index). Equivalently, with
:math:`t` the n-th largest magnitude of the group: keep every entry above
:math:`t`, then the entries equal to :math:`t` from the left until ``n`` are
kept. That is how it is computed, at close to the speed of reading W:

1. a chunk of groups (of one row; of consecutive rows when ``m`` divides the
   width) is copied, transposed, into ``m`` lanes (``S[k, g]`` = entry ``k``
   of group ``g``), so that
2. one selection network (:func:`._sorting.selection_network`, the part of a
   sorting network that fixes one position) finds every group's threshold
   :math:`t` at once, branch-free in SIMD registers;
3. ``|a| >= t`` is written straight into the bool mask, four or eight
   entries per integer store, while counting the kept entries per group;
4. only groups that kept more than ``n`` (ties at :math:`t`) are redone with
   the rule above, which is then exact.

Groups cut by the right edge (``cols % m``) and ``m > LANES_MAX_M`` take a
scalar path (a sort of the group's magnitudes gives :math:`t`, step 4 gives
the mask). The groups (the rows, when some groups are cut by the edge) are
split into one contiguous block per thread; small matrices run on the calling
thread (no thread-pool launch per call). Measured on a shared 2-core EPYC, one
thread, data in cache: 0.45-0.72 ns per weight at 2:4 ... 16:32 (the
O(m^2)-per-group rank count it replaced: 6-23 ns at 8192^2).
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .._threads import kernel_guard
from ._sorting import selection_network, sort_lanes

#: Entries of W per chunk of groups: the two lane arrays (about 2 x 16 KB in float32) stay in L1.
LANE_ENTRIES = 4096
#: Largest m solved in lanes; larger groups are sorted one by one.
LANES_MAX_M = 64
#: Matrices with fewer entries run on the calling thread: launching the pool costs more than it saves.
SERIAL_MAX_ENTRIES = 1 << 17

_WORDS_NONE, _WORDS_32, _WORDS_64 = 0, 4, 8


@nb.njit(cache=True, nogil=True)
def _keep_by_threshold(a, j0, length, n, t, o):
    """Mask of group ``a[j0 : j0 + length]`` given its n-th largest magnitude ``t``: above ``t``, then ties from the left."""
    above = 0
    for k in range(length):
        above += abs(a[j0 + k]) > t
    room = n - above
    for k in range(length):
        v = abs(a[j0 + k])
        tie = v == t
        o[j0 + k] = (v > t) | (tie & (room > 0))
        room -= tie


@nb.njit(cache=True, nogil=True)
def _group_by_sort(a, j0, length, n, o, buf):
    """One group, scalar: its threshold from a sort of its magnitudes (edge groups, m > ``LANES_MAX_M``)."""
    if n >= length:
        for k in range(length):
            o[j0 + k] = True
        return
    for k in range(length):  # insertion sort, descending: O(length^2) like the rank count it replaces, and it
        v = abs(a[j0 + k])      # compiles in a fraction of the time of ndarray.sort
        q = k
        while q > 0 and buf[q - 1] < v:
            buf[q] = buf[q - 1]
            q -= 1
        buf[q] = v
    _keep_by_threshold(a, j0, length, n, buf[n - 1], o)


@nb.njit(cache=True, nogil=True)
def _load_lanes(a, S, V, L, m):
    # S is sorted in place by the network, V keeps the magnitudes for the compare
    for k in range(m):
        Sk = S[k]
        Vk = V[k]
        for g in range(L):
            x = abs(a[g * m + k])
            Sk[g] = x
            Vk[g] = x


@nb.njit(cache=True, nogil=True)
def _write_words32(o32, V, T, kept, L, per_group):
    # bytes 4b .. 4b+3 of every group in one uint32 store (contiguous stores for m = 4)
    for b in range(per_group):
        V0 = V[4 * b]
        V1 = V[4 * b + 1]
        V2 = V[4 * b + 2]
        V3 = V[4 * b + 3]
        for g in range(L):
            t = T[g]
            k0 = np.uint32(V0[g] >= t)
            k1 = np.uint32(V1[g] >= t)
            k2 = np.uint32(V2[g] >= t)
            k3 = np.uint32(V3[g] >= t)
            o32[g * per_group + b] = k0 | (k1 << 8) | (k2 << 16) | (k3 << 24)
            kept[g] += k0 + k1 + k2 + k3


@nb.njit(cache=True, nogil=True)
def _write_words64(o64, V, T, kept, L, per_group):
    # bytes 8b .. 8b+7 of every group in one uint64 store (contiguous stores for m = 8)
    for b in range(per_group):
        for g in range(L):
            t = T[g]
            word = np.uint64(0)
            for j in range(8):
                word |= np.uint64(V[8 * b + j, g] >= t) << np.uint64(8 * j)
            o64[g * per_group + b] = word
            # the byte sum of a word of 0/1 bytes lands in its top byte
            kept[g] += np.uint32((word * np.uint64(0x0101010101010101)) >> np.uint64(56))


@nb.njit(cache=True, nogil=True)
def _write_bytes(o, V, T, kept, L, m):
    for k in range(m):
        Vk = V[k]
        for g in range(L):
            keep = Vk[g] >= T[g]
            o[g * m + k] = keep
            kept[g] += np.uint32(keep)


@nb.njit(cache=True, nogil=True)
def _topn_groups(a, o, o32, o64, words, g_lo, g_hi, n, m, net, S, V, T, kept):
    """Groups ``g_lo .. g_hi-1`` of the flat run ``a`` (group g: entries ``g*m .. g*m+m-1``), chunk by chunk in lanes."""
    lanes = S.shape[1]
    for g0 in range(g_lo, g_hi, lanes):
        L = min(lanes, g_hi - g0)
        base = g0 * m
        # the helpers index from the chunk's first entry (a view): with the chunk's offset in
        # the index LLVM did not vectorise the strided stores (measured 6x slower for m = 16)
        a_chunk = a[base:]
        _load_lanes(a_chunk, S, V, L, m)
        sort_lanes(S, net, L)
        Sn = S[m - n]
        for g in range(L):
            T[g] = Sn[g]
            kept[g] = 0
        # literal word counts for the common m: Numba compiles a copy of the writer per
        # constant, and LLVM vectorises its strided stores (a runtime stride stays scalar)
        if words == _WORDS_32 and m == 4:
            _write_words32(o32[base // 4 :], V, T, kept, L, 1)
        elif words == _WORDS_64 and m == 8:
            _write_words64(o64[base // 8 :], V, T, kept, L, 1)
        elif words == _WORDS_64 and m == 16:
            _write_words64(o64[base // 8 :], V, T, kept, L, 2)
        elif words == _WORDS_64 and m == 32:
            _write_words64(o64[base // 8 :], V, T, kept, L, 4)
        elif words == _WORDS_64:
            _write_words64(o64[base // 8 :], V, T, kept, L, m // 8)
        elif words == _WORDS_32:
            _write_words32(o32[base // 4 :], V, T, kept, L, m // 4)
        else:
            _write_bytes(o[base:], V, T, kept, L, m)
        for g in range(L):
            if kept[g] != n:  # ties at the threshold kept too many: lowest index first
                _keep_by_threshold(a, base + g * m, m, n, T[g], o)


@nb.njit(cache=True, nogil=True)
def _topn_part(A, n, m, net, out, out32, out64, words, p, parts):
    """Part ``p`` of ``parts`` (one thread's share) of the mask; all of it for ``p, parts = 0, 1``."""
    rows, cols = A.shape
    full = cols // m if m <= LANES_MAX_M else 0  # groups per row solved in lanes
    lanes = min(max(LANE_ENTRIES // m, 16), max(rows * full, 1))
    side = m if full else 1  # no lanes used: nothing sized by m (m may exceed the matrix by far)
    S = np.empty((side, lanes), A.dtype)
    V = np.empty((side, lanes), A.dtype)
    T = np.empty(lanes, A.dtype)
    kept = np.empty(lanes, np.uint32)
    if full * m == cols:
        # no edge groups: the rows are one run of groups, cut evenly into parts
        total = rows * full
        _topn_groups(A.reshape(-1), out.reshape(-1), out32.reshape(-1), out64.reshape(-1), words,
                     p * total // parts, (p + 1) * total // parts, n, m, net, S, V, T, kept)
        return
    buf = np.empty(min(m, cols), A.dtype)
    for i in range(p * rows // parts, (p + 1) * rows // parts):
        a = A[i]
        o = out[i]
        # np.int64(0): a literal 0 would compile a second copy of _topn_groups
        _topn_groups(a, o, out32[i], out64[i], words, np.int64(0), full, n, m, net, S, V, T, kept)
        for j0 in range(full * m, cols, m):
            _group_by_sort(a, j0, min(m, cols - j0), n, o, buf)


@nb.njit(parallel=True, cache=True, nogil=True)
def _topn_parallel(A, n, m, net, out, out32, out64, words, parts):
    for p in nb.prange(parts):
        # the prange index is unsigned: as int64, the serial path's compiled _topn_part serves both
        _topn_part(A, n, m, net, out, out32, out64, words, np.int64(p), parts)


def rowwise_topn(A: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the n largest |A| of every m consecutive entries along each row (A validated, C-contiguous, finite; n < m)."""
    rows, cols = A.shape
    out = np.empty(A.shape, dtype=np.bool_)
    net = selection_network(m, (m - n,)) if m <= LANES_MAX_M else selection_network(1, ())
    words = _WORDS_64 if m % 8 == 0 and cols % 8 == 0 else _WORDS_32 if m % 4 == 0 and cols % 4 == 0 else _WORDS_NONE
    out32 = out.view(np.uint32) if words == _WORDS_32 else np.empty((rows, 0), np.uint32)
    out64 = out.view(np.uint64) if words == _WORDS_64 else np.empty((rows, 0), np.uint64)
    parts = min(rows, nb.get_num_threads())
    if A.size <= SERIAL_MAX_ENTRIES or parts == 1:
        _topn_part(A, n, m, net, out, out32, out64, words, 0, 1)
    else:
        with kernel_guard():
            _topn_parallel(A, n, m, net, out, out32, out64, words, parts)
    return out
