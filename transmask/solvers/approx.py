r"""The paper's greedy 2-approximation, tile by tile, with rows/columns filled to n.

Greedy (Hubara et al. 2021, Alg. 1): visit a tile's entries from the largest
magnitude to the smallest and keep an entry when its tile-row and tile-column
both keep fewer than ``n``. The result is a maximal b-matching, and the
classical argument for greedy matching gives

.. math:: \text{kept}(\text{greedy}) \ge \tfrac12\, \text{OPT}_{\le n},

where :math:`\text{OPT}_{\le n}` is the best mask with at most ``n`` per
tile-row/column (``keep="at_most"``), which is at least the best with exactly
``n``.

The greedy can leave tile-rows and tile-columns short of ``n``. With
``keep="exactly"`` full tiles are completed: while a row ``r`` and a column
``c`` are short, apply the best augmenting path ``r -> c1 -> r1 -> c`` (keep
``(r, c1)``, drop ``(r1, c1)``, keep ``(r1, c)``), which always exists because
the greedy keeps every (short row, short column) entry. Filling can lose some
magnitude, so each completed tile is checked against the certificate

.. math:: \text{kept} \ge \tfrac12 \min\Big(2\,\text{kept}(\text{greedy}),\;
          \sum_i \text{top}_n(\text{row}_i),\; \sum_j \text{top}_n(\text{col}_j)\Big)
          \ge \tfrac12\, \text{OPT}_{=n},

and a tile that fails it (rare; never seen on random weights) is solved
exactly instead. The bound holds at once when filling lost no weight, so the
top-n sums are only computed for tiles whose fill lost weight. The 1/2
guarantee therefore holds for every tile, in both modes. Tiles cut by the matrix edge keep at most ``n`` (the greedy alone).

Order: magnitudes sorted descending, ties to the lower row-major index. Keys
pack the magnitude's bit pattern (monotone for non-negative floats) above the
index, so one integer sort orders the tile; for float64 input the lowest
mantissa bits make room for the index, so values equal to 42 significant bits
count as ties (the certificate above still holds exactly).

Speed: for m <= 32 the full tiles of a tile-row are sorted together, chunk by
chunk, by one fixed sorting network applied across tiles (SIMD, no branches);
for m <= 8 and m = 16 the scan also runs across tiles with the row/column
counts packed into 4-bit fields, otherwise it is a branch-free scalar scan.
Larger m and tiles cut by the matrix edge use a comparison sort per tile.
Each fill step evaluates the best augmenting path in O(m^2), not O(m^4).
"""
from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np

from .._threads import kernel_guard
from ._scale import exponent_scale
from ._sorting import sort_lanes, sorting_network
from ._tile_flow import full_tile, tile_workspace


@nb.njit(cache=True, nogil=True, inline="always")
def _sort_key(b, idx, idx_bits, f64):
    """Negated sort key of an entry: ascending order = descending magnitude, then ascending index."""
    if f64:
        v = (b & 0x7FFFFFFFFFFFFFFF) >> idx_bits
    else:
        v = b & 0x7FFFFFFF
    return -((v << idx_bits) | (((1 << idx_bits) - 1) - idx))


@nb.njit(cache=True, nogil=True, inline="always")
def _tile_scale(first_key, idx_bits, f64):
    """:func:`._scale.exponent_scale` of a tile, from its first sorted key (its largest magnitude's bits).

    The fill adds and compares magnitudes in float64, which overflows for
    float64 tiles near ``1.8e308``; a tile far from magnitude 1 is filled at
    a fixed scale, a power of two, so the mask does not depend on the scale
    of W (see :mod:`._scale`). The exponent is read from the key, no pass
    over the tile.
    """
    v = (-first_key) >> idx_bits  # the magnitude's bits (float64: without its lowest idx_bits)
    if f64:
        e = (v >> (52 - idx_bits)) - 1023
    else:
        e = (v >> 23) - 127
    return exponent_scale(e)


@nb.njit(cache=True, nogil=True, inline="always")
def _sorted_chunk_keys(bits, i0, c0, nt, m, idx_bits, f64, comparators, keys):
    """Sort keys of the full tiles ``(i0, (c0 + t) * m)``, ``t < nt``, in lanes ``keys[e, t]``, sorted by the network."""
    for i in range(m):
        for j in range(m):
            e = i * m + j
            for t in range(nt):
                keys[e, t] = _sort_key(bits[i0 + i, (c0 + t) * m + j], e, idx_bits, f64)
    sort_lanes(keys, comparators, nt)


@nb.njit(cache=True, nogil=True)
def _greedy_tile(bits, i0, j0, r, c, n, stride, idx_bits, f64, keys, rowof, colof, x, rowcnt, colcnt):
    """Greedy on one ``r x c`` tile by a comparison sort of its keys; returns the number kept.

    Entry ``(i, j)`` has index ``i * stride + j`` in its key (``stride`` = the
    tile's column extent, ``m`` unless the matrix is narrower than a tile).
    """
    k = 0
    for i in range(r):
        for j in range(c):
            keys[k] = _sort_key(bits[i0 + i, j0 + j], i * stride + j, idx_bits, f64)
            k += 1
    keys[:k].sort()
    return _scan_sorted(keys[:k], n, (1 << idx_bits) - 1, rowof, colof, x, rowcnt, colcnt)


@nb.njit(cache=True, nogil=True, inline="always")
def _scan_sorted(keys, n, mask_idx, rowof, colof, x, rowcnt, colcnt):
    """The greedy's scan over sorted keys, branch-free; returns the number kept.

    ``rowof``/``colof`` map ``mask_idx - idx`` (the key's low bits) to the
    entry's tile-row and tile-column, so no division is needed. Entries whose
    key is absent (a tile cut by the matrix edge) are left unkept.
    """
    for i in range(x.shape[0]):
        rowcnt[i] = 0
        for j in range(x.shape[1]):
            x[i, j] = 0
    for j in range(x.shape[1]):
        colcnt[j] = 0
    kept = 0
    for e in range(keys.shape[0]):
        low = (-keys[e]) & mask_idx
        i = rowof[low]
        j = colof[low]
        ok = np.uint8(rowcnt[i] < n) & np.uint8(colcnt[j] < n)
        x[i, j] = ok
        rowcnt[i] += ok
        colcnt[j] += ok
        kept += ok
    return kept


@nb.njit(cache=True, nogil=True)
def _index_tables(rows, stride, idx_bits):
    """``rowof[l], colof[l]``: tile-row and tile-column of the entry whose key holds ``l = mask - idx``.

    ``idx = i * stride + j`` for the ``rows x stride`` entries of a tile.
    """
    mask_idx = (1 << idx_bits) - 1
    rowof = np.zeros(mask_idx + 1, dtype=np.int64)
    colof = np.zeros(mask_idx + 1, dtype=np.int64)
    for i in range(rows):
        for j in range(stride):
            rowof[mask_idx - (i * stride + j)] = i
            colof[mask_idx - (i * stride + j)] = j
    return rowof, colof


@nb.njit(cache=True, nogil=True)
def _topn_bounds(w, n, m, sortbuf):
    """``(sum_i top_n(row_i), sum_j top_n(col_j))`` of a tile.

    Sums of the n largest values do not depend on how ties are broken, so each
    line is insertion-sorted (descending) into ``sortbuf``; m is small.
    """
    ub_row = 0.0
    ub_col = 0.0
    for side in range(2):
        total = 0.0
        for a in range(m):
            for b in range(m):
                v = w[a, b] if side == 0 else w[b, a]
                q = b
                while q > 0 and sortbuf[q - 1] < v:
                    sortbuf[q] = sortbuf[q - 1]
                    q -= 1
                sortbuf[q] = v
            for q in range(n):
                total += sortbuf[q]
        if side == 0:
            ub_row = total
        else:
            ub_col = total
    return ub_row, ub_col


# Rows of FillWork.best / FillWork.arg: the running maxima of the fill's three passes.
COLBEST, ROWGAIN, LANEBEST = 0, 1, 2


class FillWork(NamedTuple):
    """The fill's work arrays (one per thread, next to a :class:`._tile_flow.TileWork`; see :func:`_fill_tile`).

    Few arrays on purpose: every array a per-tile function receives costs
    reference counting on each call (see :mod:`._tile_flow`).
    """

    best: np.ndarray  # (3, m) float64: the passes' running maxima, rows COLBEST, ROWGAIN, LANEBEST
    arg: np.ndarray  # (3, m) int64: where each maximum was found (a row r, a column c1, a column c)
    wT: np.ndarray  # (m, m) float64: the tile's magnitudes, transposed
    xT: np.ndarray  # (m, m) int64: the kept flags, transposed


@nb.njit(cache=True, nogil=True)
def fill_workspace(m):
    """A :class:`FillWork` for tiles of side ``m``."""
    return FillWork(np.empty((3, m)), np.empty((3, m), dtype=np.int64), np.empty((m, m)), np.empty((m, m), dtype=np.int64))


@nb.njit(cache=True, nogil=True, inline="always")
def _reset_running_max(best, arg, m):
    for k in range(m):
        best[k] = -np.inf
        arg[k] = -1


@nb.njit(cache=True, nogil=True, inline="always")
def _running_max(best, arg, value, index):
    """One step of a running maximum: ``(value, index)`` when ``value > best`` (ties keep the earlier index), else ``(best, arg)``.

    Selects, not branches, so that a pass over a contiguous line keeps one
    running maximum per lane, SIMD, with no dependency chain. Scalars in and
    out: array arguments to a helper called in an inner loop would cost
    reference counting per call.
    """
    better = value > best
    return (value if better else best), (index if better else arg)


@nb.njit(cache=True, nogil=True)
def _fill_tile(w, x, rowcnt, colcnt, fill, n, m):
    r"""Complete a greedy tile to exactly n per row/column with best 3-edge augmenting paths.

    A step keeps ``(r, c1)``, drops ``(r1, c1)`` and keeps ``(r1, c)`` for a
    short row ``r`` and a short column ``c``, with the largest gain

    .. math:: g = w_{r c_1} - w_{r_1 c_1} + w_{r_1 c}
              = \max_{r_1:\, x_{r_1 c} = 0}\Big( w_{r_1 c} + \max_{c_1:\, x_{r_1 c_1} = 1}
                \big( \max_{r \text{ short}:\, x_{r c_1} = 0} w_{r c_1} - w_{r_1 c_1} \big)\Big),

    evaluated inside out in three O(m^2) passes per step instead of
    enumerating the O(m^4) paths (floating-point rounding is monotone, so the
    inner maxima give the same best gain). Each pass keeps one running maximum
    per lane (:func:`_running_max`) of a contiguous row of ``w`` (pass 1) or of
    its transpose ``wT`` (passes 2 and 3, with ``xT`` the transpose of ``x``),
    so the inner loops are SIMD over the tile's lines; the last pass reduces
    its m lanes once. Ties go to the lower ``r`` for each ``c1``, the lower
    ``c1`` for each ``r1``, then the lower ``c`` and ``r1``. A short row and a
    short column are never both unkept after a maximal greedy, and each step
    keeps that true, so direct edges ``(r, c)`` are only taken for safety.
    ``x`` and ``xT`` must agree on entry; both are updated.

    Returns ``(change in kept weight, completed)``; ``completed`` is False only
    if no augmenting path was found (not expected; the caller solves exactly).
    """
    wT, xT, best_, arg_ = fill.wT, fill.xT, fill.best, fill.arg
    colbest, rowgain, lanebest = best_[COLBEST], best_[ROWGAIN], best_[LANEBEST]
    colbest_row, rowgain_col, lanebest_c = arg_[COLBEST], arg_[ROWGAIN], arg_[LANEBEST]
    delta = 0.0
    completed = True
    deficit = 0
    for i in range(m):
        deficit += n - rowcnt[i]
    while deficit > 0:
        _reset_running_max(colbest, colbest_row, m)
        for r in range(m):  # pass 1: the best entry a short row could add, per column
            if rowcnt[r] >= n:
                continue
            wr = w[r]
            xr = x[r]
            for c1 in range(m):
                colbest[c1], colbest_row[c1] = _running_max(colbest[c1], colbest_row[c1], wr[c1] if xr[c1] == 0 else -np.inf, r)
        _reset_running_max(rowgain, rowgain_col, m)
        for c1 in range(m):  # pass 2: swap it for a kept entry of row r1 in the same column
            cb = colbest[c1]
            wc = wT[c1]
            xc = xT[c1]
            for r1 in range(m):
                rowgain[r1], rowgain_col[r1] = _running_max(rowgain[r1], rowgain_col[r1], cb - wc[r1] if xc[r1] != 0 else -np.inf, c1)  # -inf when no short row
        _reset_running_max(lanebest, lanebest_c, m)
        for c in range(m):  # pass 3: row r1 then keeps an entry in a short column
            if colcnt[c] >= n:
                continue
            wc = wT[c]
            xc = xT[c]
            for r1 in range(m):
                g = wc[r1] if rowcnt[r1] < n else rowgain[r1] + wc[r1]
                lanebest[r1], lanebest_c[r1] = _running_max(lanebest[r1], lanebest_c[r1], g if xc[r1] == 0 else -np.inf, c)
        best = -np.inf
        bc = -1
        br1 = -1
        for r1 in range(m):  # the first (lowest c, then lowest r1) of the largest gains
            g = lanebest[r1]
            if g > best or (g == best and lanebest_c[r1] < bc):
                best = g
                bc = lanebest_c[r1]
                br1 = r1
        if bc < 0:
            completed = False
            break
        if rowcnt[br1] < n:  # direct edge
            x[br1, bc] = 1
            xT[bc, br1] = 1
            rowcnt[br1] += 1
        else:
            c1 = rowgain_col[br1]
            r = colbest_row[c1]
            x[r, c1] = 1
            xT[c1, r] = 1
            x[br1, c1] = 0
            xT[c1, br1] = 0
            x[br1, bc] = 1
            xT[bc, br1] = 1
            rowcnt[r] += 1
        colcnt[bc] += 1
        delta += best
        deficit -= 1
    return delta, completed


@nb.njit(cache=True, nogil=True, inline="always")
def _one_step(A, i0, j0, m, x, r, c, colbest, scale):
    r"""The fill's step for a tile whose only short row is ``r`` and only short column is ``c``.

    Returns ``(gain, r1, c1)`` of the path ``r -> c1 -> r1 -> c`` (or of the
    direct edge ``(r, c)`` with ``r1 = r``) that :func:`_fill_tile` would take:
    the same expressions in the same association (``colbest[c1] = w[r, c1]``
    for unkept ``(r, c1)``, ``(colbest[c1] - w[r1, c1]) + w[r1, c]``), the same
    ties (lowest ``c1`` for each ``r1``, then lowest ``r1``); ``r1 = -1`` when
    there is none. Weights are read from ``A`` as ``abs(A) * scale`` (no tile copy).
    """
    for c1 in range(m):
        colbest[c1] = np.float64(abs(A[i0 + r, j0 + c1])) * scale if x[r, c1] == 0 else -np.inf
    best = -np.inf
    br1 = -1
    bc1 = -1
    for r1 in range(m):
        if x[r1, c] != 0:
            continue
        if r1 == r:
            g = np.float64(abs(A[i0 + r, j0 + c])) * scale
            hc = -1
        else:
            h = -np.inf
            hc = -1
            for c1 in range(m):
                t = colbest[c1] - np.float64(abs(A[i0 + r1, j0 + c1])) * scale if x[r1, c1] != 0 else -np.inf
                better = t > h
                h = t if better else h
                hc = c1 if better else hc
            g = h + np.float64(abs(A[i0 + r1, j0 + c])) * scale
        if g > best:
            best = g
            br1 = r1
            bc1 = hc
    return best, br1, bc1


@nb.njit(cache=True, nogil=True, inline="always")
def _certified(w, sortbuf, n, m, kept_w, delta):
    """The 1/2 certificate of a completed tile that lost weight: ``kept + delta >= min(2 kept, ub_row, ub_col) / 2``."""
    ub_row, ub_col = _topn_bounds(w, n, m, sortbuf)
    return kept_w + delta >= 0.5 * min(2.0 * kept_w, min(ub_row, ub_col))


@nb.njit(cache=True, nogil=True)
def _complete_tile(A, i0, j0, n, m, scale, x, rowcnt, colcnt, w, sortbuf, fill):
    r"""Fill the greedy state ``x`` (with its row and column counts) of the full tile at ``(i0, j0)`` to exactly n
    per row/column; return whether the result meets the 1/2 certificate.

    The certificate ``final >= min(2 kept, ub_row, ub_col) / 2`` holds at once
    when filling did not lose weight (``final >= kept``), so the top-n bounds
    are only computed for tiles whose fill lost weight. A tile that fails it
    (or for which no augmenting path was found) is left with its magnitudes
    in ``w``, and the caller solves it exactly (:func:`._tile_flow.full_tile`).

    Most short tiles lack one entry (one short row ``r``, one short column
    ``c``); their step is found straight from ``A`` by :func:`_one_step`, the
    same path and gain as :func:`_fill_tile`'s, and the tile is only copied
    when the step loses weight. The tile is read as ``abs(A) * scale``, a
    power of two that keeps its sums finite (:func:`_tile_scale`). (It takes the arrays it uses, not the whole
    :class:`._tile_flow.TileWork`: it runs once per short tile, and each array
    a call receives costs reference counting.)
    """
    deficit = 0
    for i in range(m):
        deficit += n - rowcnt[i]
    stepped = False
    certified = False
    if deficit == 1:
        r = 0
        c = 0
        for i in range(m):
            r = i if rowcnt[i] < n else r
            c = i if colcnt[i] < n else c
        best, br1, bc1 = _one_step(A, i0, j0, m, x, r, c, fill.best[COLBEST], scale)
        stepped = br1 >= 0
        if stepped:
            kept_w = 0.0
            if best < 0.0:
                for i in range(m):
                    for j in range(m):
                        v = abs(A[i0 + i, j0 + j]) * scale
                        w[i, j] = v
                        kept_w += v * x[i, j]
            if br1 == r:  # direct edge
                x[r, c] = 1
            else:
                x[r, bc1] = 1
                x[br1, bc1] = 0
                x[br1, c] = 1
            rowcnt[r] += 1
            colcnt[c] += 1
            certified = best >= 0.0 or _certified(w, sortbuf, n, m, kept_w, best)
    if not stepped:
        wT, xT = fill.wT, fill.xT
        kept_w = 0.0
        for i in range(m):
            for j in range(m):
                v = abs(A[i0 + i, j0 + j]) * scale
                w[i, j] = v
                wT[j, i] = v
                xT[j, i] = x[i, j]
                kept_w += v * x[i, j]
        delta, completed = _fill_tile(w, x, rowcnt, colcnt, fill, n, m)
        certified = completed and (delta >= 0.0 or _certified(w, sortbuf, n, m, kept_w, delta))
    return certified


@nb.njit(cache=True, nogil=True)
def _greedy_small_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, chunk, rowof, colof, work, fill, out):
    """Greedy on the full tiles of tile-row ``ti`` (m <= 8, or m = 16), vectorised across its tiles.

    Each tile's keys are sorted by a fixed sorting network (Batcher's odd-even
    merge sort; each compare-exchange is applied to all tiles of a chunk at
    once, so LLVM vectorises it), then scanned with the row and column counts
    packed into 4-bit fields of one integer per tile (``m * 4 <= 64`` bits,
    counts never exceed ``n < m <= 16``): branch-free, SIMD across tiles. The
    kept entries are bits of one integer per tile when ``m * m <= 64``, else
    one flag per sorted key (m = 16), unpacked per tile through the index
    tables. Tiles left short with ``keep="exactly"`` are redone one at a time
    by the scalar fill and certificate (:func:`_complete_tile`).
    Returns the number of tiles that failed the certificate.
    """
    C = A.shape[1]
    TCf = C // m
    k = m * m
    bitmask = k <= 64
    mask_idx = (1 << idx_bits) - 1
    CH = min(TCf, chunk)
    i0 = ti * m
    keys = np.empty((k, CH), dtype=np.int64)
    flags = np.empty((1 if bitmask else k, CH), dtype=np.int64)
    rowpack = np.empty(CH, dtype=np.int64)
    colpack = np.empty(CH, dtype=np.int64)
    kept = np.empty(CH, dtype=np.int64)
    x, rowcnt, colcnt, w, sortbuf = work.x, work.rowcnt, work.colcnt, work.w, work.sortbuf
    pow2 = (m & (m - 1)) == 0
    mshift = 0
    while (1 << mshift) < m:
        mshift += 1
    fallbacks = 0
    for c0 in range(0, TCf, CH):
        nt = min(CH, TCf - c0)
        _sorted_chunk_keys(bits, i0, c0, nt, m, idx_bits, f64, comparators, keys)
        for t in range(nt):
            rowpack[t] = 0
            colpack[t] = 0
            kept[t] = 0
        for e in range(k):
            ke = keys[e]
            # three copies of the loop, so that each is branch-free and vectorises;
            # shifts instead of integer division where m is a power of two
            if pow2 and bitmask:
                for t in range(nt):
                    idx = mask_idx - ((-ke[t]) & mask_idx)
                    keep, rowpack[t], colpack[t] = _keep_if_room(rowpack[t], colpack[t], (idx >> mshift) << 2, (idx & (m - 1)) << 2, n)
                    kept[t] |= keep << idx
            elif pow2:
                fe = flags[e]
                for t in range(nt):
                    idx = mask_idx - ((-ke[t]) & mask_idx)
                    keep, rowpack[t], colpack[t] = _keep_if_room(rowpack[t], colpack[t], (idx >> mshift) << 2, (idx & (m - 1)) << 2, n)
                    kept[t] += keep
                    fe[t] = keep
            else:
                for t in range(nt):
                    idx = mask_idx - ((-ke[t]) & mask_idx)
                    i = idx // m
                    keep, rowpack[t], colpack[t] = _keep_if_room(rowpack[t], colpack[t], 4 * i, 4 * (idx - i * m), n)
                    kept[t] |= keep << idx
        for t in range(nt):
            j0 = (c0 + t) * m
            kt = kept[t]
            if bitmask:
                short = _popcount(kt) < n * m
                if at_most or not short:  # written straight from the kept bits
                    for i in range(m):
                        for j in range(m):
                            out[i0 + i, j0 + j] = ((kt >> (i * m + j)) & 1) != 0
                    continue
                for i in range(m):
                    for j in range(m):
                        x[i, j] = (kt >> (i * m + j)) & 1
            else:
                for e in range(k):
                    low = (-keys[e, t]) & mask_idx
                    x[rowof[low], colof[low]] = flags[e, t]
                short = kt < n * m
            if not at_most and short:
                for i in range(m):
                    rowcnt[i] = (rowpack[t] >> (4 * i)) & 15
                    colcnt[i] = (colpack[t] >> (4 * i)) & 15
                scale = _tile_scale(keys[0, t], idx_bits, f64)
                if not _complete_tile(A, i0, j0, n, m, scale, x, rowcnt, colcnt, w, sortbuf, fill):
                    full_tile(work, n, m, False)  # the 1/2 certificate failed: solve exactly
                    fallbacks += 1
            for i in range(m):
                for j in range(m):
                    out[i0 + i, j0 + j] = x[i, j] != 0
    return fallbacks


@nb.njit(cache=True, nogil=True, inline="always")
def _keep_if_room(rowpack, colpack, rs, cs, n):
    """The greedy's step on packed counters: ``(keep, rowpack, colpack)`` with ``keep = 1`` when the 4-bit
    count of the entry's tile-row (bits ``rs``) and tile-column (bits ``cs``) are below ``n``, and the
    counts updated. Scalars in and out, so the loops that call it stay SIMD."""
    keep = np.int64(((rowpack >> rs) & 15) < n) & np.int64(((colpack >> cs) & 15) < n)
    return keep, rowpack + (keep << rs), colpack + (keep << cs)


@nb.njit(cache=True, nogil=True, inline="always")
def _popcount(v):
    """Number of set bits of a 64-bit integer (SWAR; the sign bit counts)."""
    u = np.uint64(v)
    u = u - ((u >> np.uint64(1)) & np.uint64(0x5555555555555555))
    u = (u & np.uint64(0x3333333333333333)) + ((u >> np.uint64(2)) & np.uint64(0x3333333333333333))
    u = (u + (u >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((u * np.uint64(0x0101010101010101)) >> np.uint64(56))


@nb.njit(parallel=True, cache=True, nogil=True)
def _greedy_small_kernel(A, bits, n, m, at_most, f64, idx_bits, comparators, chunk, out):
    """Full tiles of small m, tile-rows in parallel (see :func:`_greedy_small_tile_row`).

    Returns ``(tiles solved exactly after failing the certificate, tiles whose exact solve failed a check)``.
    """
    rowof, colof = _index_tables(m, m, idx_bits)
    fallbacks = 0
    failed = 0
    for ti in nb.prange(A.shape[0] // m):
        work, fill = tile_workspace(m, m), fill_workspace(m)
        fallbacks += _greedy_small_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, chunk, rowof, colof, work, fill, out)
        failed += work.failed[0]
    return fallbacks, failed


@nb.njit(cache=True, nogil=True)
def _greedy_network_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, chunk, rowof, colof, work, fill, out):
    """Greedy on the full tiles of tile-row ``ti`` for medium m: sorting network across tiles, scalar scan.

    The keys of ``chunk`` tiles at a time are sorted by one fixed sorting
    network applied to all of them at once (SIMD across tiles, no branches),
    then each tile's sorted keys are scanned by :func:`_scan_sorted`.
    Returns the number of tiles that failed the certificate.
    """
    C = A.shape[1]
    TCf = C // m
    k = m * m
    mask_idx = (1 << idx_bits) - 1
    CH = min(TCf, chunk)
    i0 = ti * m
    keys = np.empty((k, CH), dtype=np.int64)
    tkeys = np.empty(k, dtype=np.int64)
    x, rowcnt, colcnt, w, sortbuf = work.x, work.rowcnt, work.colcnt, work.w, work.sortbuf
    fallbacks = 0
    for c0 in range(0, TCf, CH):
        nt = min(CH, TCf - c0)
        _sorted_chunk_keys(bits, i0, c0, nt, m, idx_bits, f64, comparators, keys)
        for t in range(nt):
            j0 = (c0 + t) * m
            for e in range(k):
                tkeys[e] = keys[e, t]
            kept = _scan_sorted(tkeys, n, mask_idx, rowof, colof, x, rowcnt, colcnt)
            if not at_most and kept < n * m:
                if not _complete_tile(A, i0, j0, n, m, _tile_scale(tkeys[0], idx_bits, f64), x, rowcnt, colcnt, w, sortbuf, fill):
                    full_tile(work, n, m, False)  # the 1/2 certificate failed: solve exactly
                    fallbacks += 1
            for i in range(m):
                for j in range(m):
                    out[i0 + i, j0 + j] = x[i, j] != 0
    return fallbacks


@nb.njit(parallel=True, cache=True, nogil=True)
def _greedy_network_kernel(A, bits, n, m, at_most, f64, idx_bits, comparators, chunk, out):
    """Full tiles of medium m, tile-rows in parallel (see :func:`_greedy_network_tile_row`); returns as :func:`_greedy_small_kernel`."""
    rowof, colof = _index_tables(m, m, idx_bits)
    fallbacks = 0
    failed = 0
    for ti in nb.prange(A.shape[0] // m):
        work, fill = tile_workspace(m, m), fill_workspace(m)
        fallbacks += _greedy_network_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, chunk, rowof, colof, work, fill, out)
        failed += work.failed[0]
    return fallbacks, failed


@nb.njit(parallel=True, cache=True, nogil=True)
def _approx_kernel(A, bits, n, m, at_most, f64, idx_bits, skip_full, out):
    """Per-tile greedy (comparison sort) for all tiles, or only the edge tiles with ``skip_full``.

    Work arrays are sized by the tiles' real extent ``min(m, rows) x min(m, cols)``,
    so an ``m`` larger than the matrix costs the matrix, not ``m``. Returns as
    :func:`_greedy_small_kernel`.
    """
    R, C = A.shape
    TR = (R + m - 1) // m
    TC = (C + m - 1) // m
    mr, mc = min(m, R), min(m, C)
    rowof, colof = _index_tables(mr, mc, idx_bits)
    fallbacks = 0
    failed = 0
    for ti in nb.prange(TR):
        keys = np.zeros(mr * mc, dtype=np.int64)
        work = tile_workspace(mr, mc)
        fill = fill_workspace(m if mr == m and mc == m else 1)  # only full tiles are filled
        x, rowcnt, colcnt, w, sortbuf = work.x, work.rowcnt, work.colcnt, work.w, work.sortbuf
        local_fallbacks = 0
        i0 = ti * m
        r = min(m, R - i0)
        for tj in range(TC):
            j0 = tj * m
            c = min(m, C - j0)
            full = r == m and c == m
            if full and skip_full:
                continue
            kept = _greedy_tile(bits, i0, j0, r, c, n, mc, idx_bits, f64, keys, rowof, colof, x, rowcnt, colcnt)
            if full and not at_most and kept < n * m:
                if not _complete_tile(A, i0, j0, n, m, _tile_scale(keys[0], idx_bits, f64), x, rowcnt, colcnt, w, sortbuf, fill):
                    full_tile(work, n, m, False)  # the 1/2 certificate failed: solve exactly
                    local_fallbacks += 1
            for i in range(r):
                for j in range(c):
                    out[i0 + i, j0 + j] = x[i, j] != 0
        fallbacks += local_fallbacks
        failed += work.failed[0]
    return fallbacks, failed


SMALL_M = 8  # m <= 8 or m == 16: sorting network across tiles + packed 4-bit counters
NETWORK_M = 32  # m*m <= 1024 keys: sorting network across tiles + scalar scan
NETWORK_KEY_BYTES = 1 << 17  # keys of one chunk of tiles (k x chunk int64) stay in L2


def index_bits(m: int, rows: int, cols: int) -> int:
    """Bits of an entry's index within its tile, kept below the magnitude in its sort key.

    ``m * m`` slots, or fewer when the matrix is smaller than a tile (then it
    is one tile of ``min(m, rows) x min(m, cols)`` entries).
    """
    return max(1, int(min(m, rows) * min(m, cols) - 1).bit_length())


def solve(A: np.ndarray, n: int, m: int, keep: str, return_fallbacks: bool = False):
    """Greedy 2-approximation (see the module docstring and :func:`transmask.optimal_mask`)."""
    f64 = A.dtype == np.float64
    bits = A.view(np.uint64 if f64 else np.uint32)
    R, C = A.shape
    idx_bits = index_bits(m, R, C)
    if not f64 and 31 + idx_bits > 62:  # pragma: no cover - a single tile of more than 2**31 entries
        raise ValueError(f"m={m} is too large for the approximation's sort keys")
    at_most = keep == "at_most"
    out = np.empty(A.shape, dtype=np.bool_)
    fallbacks = failed = 0
    vectorised = m <= NETWORK_M and R >= m and C >= m
    chunk = min(256, max(4, NETWORK_KEY_BYTES // (8 * m * m)))
    network = sorting_network(m * m) if vectorised else None
    with kernel_guard():
        if vectorised and (m <= SMALL_M or m == 16):
            fb, fl = _greedy_small_kernel(A, bits, n, m, at_most, f64, idx_bits, network, chunk, out)
            fallbacks, failed = fallbacks + fb, failed + fl
        elif vectorised:
            fb, fl = _greedy_network_kernel(A, bits, n, m, at_most, f64, idx_bits, network, chunk, out)
            fallbacks, failed = fallbacks + fb, failed + fl
        if not (vectorised and R % m == 0 and C % m == 0):
            fb, fl = _approx_kernel(A, bits, n, m, at_most, f64, idx_bits, vectorised, out)
            fallbacks, failed = fallbacks + fb, failed + fl
    if failed:
        raise RuntimeError(f"transmask approximation: the exact solve of {failed} tile(s) failed an internal check "
                           f"(n={n}, m={m}, keep={keep!r}); this is a bug, please report it with the input")
    return (out, fallbacks) if return_fallbacks else out
