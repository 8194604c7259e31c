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

import numba as nb
import numpy as np

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
def _sorted_chunk_keys(bits, i0, c0, nt, m, idx_bits, f64, comparators, keys):
    """Sort keys of the full tiles ``(i0, (c0 + t) * m)``, ``t < nt``, in lanes ``keys[e, t]``, sorted by the network."""
    for i in range(m):
        for j in range(m):
            e = i * m + j
            for t in range(nt):
                keys[e, t] = _sort_key(bits[i0 + i, (c0 + t) * m + j], e, idx_bits, f64)
    sort_lanes(keys, comparators, nt)


@nb.njit(cache=True, nogil=True)
def _greedy_tile(bits, i0, j0, r, c, n, m, idx_bits, f64, keys, rowof, colof, x, rowcnt, colcnt):
    """Greedy on one ``r x c`` tile by a comparison sort of its keys; returns the number kept."""
    k = 0
    for i in range(r):
        for j in range(c):
            keys[k] = _sort_key(bits[i0 + i, j0 + j], i * m + j, idx_bits, f64)
            k += 1
    keys[:k].sort()
    return _scan_sorted(keys[:k], n, m, (1 << idx_bits) - 1, rowof, colof, x, rowcnt, colcnt)


@nb.njit(cache=True, nogil=True, inline="always")
def _scan_sorted(keys, n, m, mask_idx, rowof, colof, x, rowcnt, colcnt):
    """The greedy's scan over sorted keys, branch-free; returns the number kept.

    ``rowof``/``colof`` map ``mask_idx - idx`` (the key's low bits) to the
    entry's tile-row and tile-column, so no division is needed. Entries whose
    key is absent (a tile cut by the matrix edge) are left unkept.
    """
    for i in range(m):
        rowcnt[i] = 0
        colcnt[i] = 0
        for j in range(m):
            x[i, j] = 0
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
def _index_tables(m, idx_bits):
    """``rowof[l], colof[l]``: tile-row and tile-column of the entry whose key holds ``l = mask - idx``."""
    mask_idx = (1 << idx_bits) - 1
    rowof = np.zeros(mask_idx + 1, dtype=np.int64)
    colof = np.zeros(mask_idx + 1, dtype=np.int64)
    for i in range(m):
        for j in range(m):
            rowof[mask_idx - (i * m + j)] = i
            colof[mask_idx - (i * m + j)] = j
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


@nb.njit(cache=True, nogil=True)
def _fill_tile(w, wT, n, m, x, xT, rowcnt, colcnt, colbest, colbest_row, rowgain, rowgain_col, lanebest, lanebest_c):
    r"""Complete a greedy tile to exactly n per row/column with best 3-edge augmenting paths.

    A step keeps ``(r, c1)``, drops ``(r1, c1)`` and keeps ``(r1, c)`` for a
    short row ``r`` and a short column ``c``, with the largest gain

    .. math:: g = w_{r c_1} - w_{r_1 c_1} + w_{r_1 c}
              = \max_{r_1:\, x_{r_1 c} = 0}\Big( w_{r_1 c} + \max_{c_1:\, x_{r_1 c_1} = 1}
                \big( \max_{r \text{ short}:\, x_{r c_1} = 0} w_{r c_1} - w_{r_1 c_1} \big)\Big),

    evaluated inside out in three O(m^2) passes per step instead of
    enumerating the O(m^4) paths (floating-point rounding is monotone, so the
    inner maxima give the same best gain). Each pass keeps one running maximum
    per lane of a contiguous row of ``w`` (pass 1) or of its transpose ``wT``
    (passes 2 and 3, with ``xT`` the transpose of ``x``), as selects, so the
    inner loops are SIMD over the tile's lines with no dependency chain; the
    last pass reduces its m lanes once. Ties go to the lower ``r`` for each
    ``c1``, the lower ``c1`` for each ``r1``, then the lower ``c`` and ``r1``.
    A short row and a short column are never both unkept after a maximal
    greedy, and each step keeps that true, so direct edges ``(r, c)`` are only
    taken for safety. ``x`` and ``xT`` must agree on entry; both are updated.

    Returns ``(change in kept weight, completed)``; ``completed`` is False only
    if no augmenting path was found (not expected; the caller solves exactly).
    """
    delta = 0.0
    deficit = 0
    for i in range(m):
        deficit += n - rowcnt[i]
    while deficit > 0:
        for c1 in range(m):
            colbest[c1] = -np.inf
            colbest_row[c1] = -1
        for r in range(m):
            if rowcnt[r] >= n:
                continue
            wr = w[r]
            xr = x[r]
            for c1 in range(m):
                v = wr[c1] if xr[c1] == 0 else -np.inf
                better = v > colbest[c1]
                colbest[c1] = v if better else colbest[c1]
                colbest_row[c1] = r if better else colbest_row[c1]
        for r1 in range(m):
            rowgain[r1] = -np.inf
            rowgain_col[r1] = -1
        for c1 in range(m):
            cb = colbest[c1]
            wc = wT[c1]
            xc = xT[c1]
            for r1 in range(m):
                g = cb - wc[r1] if xc[r1] != 0 else -np.inf  # -inf when no short row
                better = g > rowgain[r1]
                rowgain[r1] = g if better else rowgain[r1]
                rowgain_col[r1] = c1 if better else rowgain_col[r1]
        for r1 in range(m):
            lanebest[r1] = -np.inf
            lanebest_c[r1] = -1
        for c in range(m):
            if colcnt[c] >= n:
                continue
            wc = wT[c]
            xc = xT[c]
            for r1 in range(m):
                g = wc[r1] if rowcnt[r1] < n else rowgain[r1] + wc[r1]
                g = g if xc[r1] == 0 else -np.inf
                better = g > lanebest[r1]
                lanebest[r1] = g if better else lanebest[r1]
                lanebest_c[r1] = c if better else lanebest_c[r1]
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
            return delta, False
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
    return delta, True


@nb.njit(cache=True, nogil=True)
def _approx_workspace(m):
    """Per-thread work arrays: :func:`tile_workspace`'s and the fill's ``fbuf``/``fidx``.

    ``fbuf`` (``(m + 3) x m`` floats) holds the fill's three lane buffers and,
    in rows ``3:``, the tile's transposed weights; ``fidx`` (int64) the three
    index buffers and the transposed kept flags.
    """
    w, x, rowcnt, colcnt, pot, dist, prev, done, sortbuf = tile_workspace(m)
    return w, x, rowcnt, colcnt, pot, dist, prev, done, sortbuf, np.empty((m + 3, m)), np.empty((m + 3, m), dtype=np.int64)


@nb.njit(cache=True, nogil=True, inline="always")
def _one_step(A, i0, j0, m, x, r, c, colbest):
    r"""The fill's step for a tile whose only short row is ``r`` and only short column is ``c``.

    Returns ``(gain, r1, c1)`` of the path ``r -> c1 -> r1 -> c`` (or of the
    direct edge ``(r, c)`` with ``r1 = r``) that :func:`_fill_tile` would take:
    the same expressions in the same association (``colbest[c1] = w[r, c1]``
    for unkept ``(r, c1)``, ``(colbest[c1] - w[r1, c1]) + w[r1, c]``), the same
    ties (lowest ``c1`` for each ``r1``, then lowest ``r1``); ``r1 = -1`` when
    there is none. Weights are read from ``A`` as ``abs`` (no tile copy).
    """
    for c1 in range(m):
        colbest[c1] = np.float64(abs(A[i0 + r, j0 + c1])) if x[r, c1] == 0 else -np.inf
    best = -np.inf
    br1 = -1
    bc1 = -1
    for r1 in range(m):
        if x[r1, c] != 0:
            continue
        if r1 == r:
            g = np.float64(abs(A[i0 + r, j0 + c]))
            hc = -1
        else:
            h = -np.inf
            hc = -1
            for c1 in range(m):
                t = colbest[c1] - np.float64(abs(A[i0 + r1, j0 + c1])) if x[r1, c1] != 0 else -np.inf
                better = t > h
                h = t if better else h
                hc = c1 if better else hc
            g = h + np.float64(abs(A[i0 + r1, j0 + c]))
        if g > best:
            best = g
            br1 = r1
            bc1 = hc
    return best, br1, bc1


@nb.njit(cache=True, nogil=True)
def _complete_tile(A, i0, j0, n, m, x, rowcnt, colcnt, w, pot, dist, prev, done, sortbuf, fbuf, fidx):
    r"""Fill a full greedy tile (``x``, counts) to exactly n per row/column and check the 1/2 certificate.

    The certificate ``final >= min(2 kept, ub_row, ub_col) / 2`` holds at once
    when filling did not lose weight (``final >= kept``), so the top-n bounds
    are only computed for tiles whose fill lost weight. Returns 1 when the
    certificate failed (or no augmenting path was found) and the tile was
    solved exactly instead, else 0.

    Most short tiles lack one entry (one short row ``r``, one short column
    ``c``); their step is found straight from ``A`` by :func:`_one_step`, the
    same path and gain as :func:`_fill_tile`'s, and the tile is only copied
    when the step loses weight.
    """
    deficit = 0
    for i in range(m):
        deficit += n - rowcnt[i]
    if deficit == 1:
        r = 0
        c = 0
        for i in range(m):
            r = i if rowcnt[i] < n else r
            c = i if colcnt[i] < n else c
        best, br1, bc1 = _one_step(A, i0, j0, m, x, r, c, fbuf[0])
        if br1 >= 0:
            if best < 0.0:
                kept_w = 0.0
                for i in range(m):
                    for j in range(m):
                        v = abs(A[i0 + i, j0 + j])
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
            if best >= 0.0:
                return 0
            ub_row, ub_col = _topn_bounds(w, n, m, sortbuf)
            if kept_w + best >= 0.5 * min(2.0 * kept_w, min(ub_row, ub_col)):
                return 0
            full_tile(w, n, m, x, colcnt, rowcnt, pot, dist, prev, done, sortbuf, False)
            return 1
    wT = fbuf[3:]
    xT = fidx[3:]
    kept_w = 0.0
    for i in range(m):
        for j in range(m):
            v = abs(A[i0 + i, j0 + j])
            w[i, j] = v
            wT[j, i] = v
            xT[j, i] = x[i, j]
            kept_w += v * x[i, j]
    delta, completed = _fill_tile(w, wT, n, m, x, xT, rowcnt, colcnt, fbuf[0], fidx[0], fbuf[1], fidx[1], fbuf[2], fidx[2])
    if completed:
        if delta >= 0.0:
            return 0
        ub_row, ub_col = _topn_bounds(w, n, m, sortbuf)
        if kept_w + delta >= 0.5 * min(2.0 * kept_w, min(ub_row, ub_col)):
            return 0
    full_tile(w, n, m, x, colcnt, rowcnt, pot, dist, prev, done, sortbuf, False)
    return 1


@nb.njit(cache=True, nogil=True)
def _greedy_small_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, chunk, rowof, colof, out):
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
    w, x, rowcnt, colcnt, pot, dist, prev, done, sortbuf, fbuf, fidx = _approx_workspace(m)
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
            if pow2 and bitmask:  # shifts instead of integer division keep the loop vectorisable
                for t in range(nt):
                    idx = mask_idx - ((-ke[t]) & mask_idx)
                    rs = (idx >> mshift) << 2
                    cs = (idx & (m - 1)) << 2
                    keep = np.int64(((rowpack[t] >> rs) & 15) < n) & np.int64(((colpack[t] >> cs) & 15) < n)
                    rowpack[t] += keep << rs
                    colpack[t] += keep << cs
                    kept[t] |= keep << idx
            elif pow2:
                fe = flags[e]
                for t in range(nt):
                    idx = mask_idx - ((-ke[t]) & mask_idx)
                    rs = (idx >> mshift) << 2
                    cs = (idx & (m - 1)) << 2
                    keep = np.int64(((rowpack[t] >> rs) & 15) < n) & np.int64(((colpack[t] >> cs) & 15) < n)
                    rowpack[t] += keep << rs
                    colpack[t] += keep << cs
                    kept[t] += keep
                    fe[t] = keep
            else:
                for t in range(nt):
                    idx = mask_idx - ((-ke[t]) & mask_idx)
                    i = idx // m
                    rs = 4 * i
                    cs = 4 * (idx - i * m)
                    keep = np.int64(((rowpack[t] >> rs) & 15) < n) & np.int64(((colpack[t] >> cs) & 15) < n)
                    rowpack[t] += keep << rs
                    colpack[t] += keep << cs
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
                fallbacks += _complete_tile(A, i0, j0, n, m, x, rowcnt, colcnt, w, pot, dist, prev, done, sortbuf, fbuf, fidx)
            for i in range(m):
                for j in range(m):
                    out[i0 + i, j0 + j] = x[i, j] != 0
    return fallbacks


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
    """Full tiles of small m, tile-rows in parallel (see :func:`_greedy_small_tile_row`)."""
    rowof, colof = _index_tables(m, idx_bits)
    fallbacks = 0
    for ti in nb.prange(A.shape[0] // m):
        fallbacks += _greedy_small_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, chunk, rowof, colof, out)
    return fallbacks


@nb.njit(cache=True, nogil=True)
def _greedy_network_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, chunk, rowof, colof, out):
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
    w, x, rowcnt, colcnt, pot, dist, prev, done, sortbuf, fbuf, fidx = _approx_workspace(m)
    fallbacks = 0
    for c0 in range(0, TCf, CH):
        nt = min(CH, TCf - c0)
        _sorted_chunk_keys(bits, i0, c0, nt, m, idx_bits, f64, comparators, keys)
        for t in range(nt):
            j0 = (c0 + t) * m
            for e in range(k):
                tkeys[e] = keys[e, t]
            kept = _scan_sorted(tkeys, n, m, mask_idx, rowof, colof, x, rowcnt, colcnt)
            if not at_most and kept < n * m:
                fallbacks += _complete_tile(A, i0, j0, n, m, x, rowcnt, colcnt, w, pot, dist, prev, done, sortbuf, fbuf, fidx)
            for i in range(m):
                for j in range(m):
                    out[i0 + i, j0 + j] = x[i, j] != 0
    return fallbacks


@nb.njit(parallel=True, cache=True, nogil=True)
def _greedy_network_kernel(A, bits, n, m, at_most, f64, idx_bits, comparators, chunk, out):
    """Full tiles of medium m, tile-rows in parallel (see :func:`_greedy_network_tile_row`)."""
    rowof, colof = _index_tables(m, idx_bits)
    fallbacks = 0
    for ti in nb.prange(A.shape[0] // m):
        fallbacks += _greedy_network_tile_row(A, bits, ti, n, m, at_most, f64, idx_bits, comparators, chunk, rowof, colof, out)
    return fallbacks


@nb.njit(parallel=True, cache=True, nogil=True)
def _approx_kernel(A, bits, n, m, at_most, f64, idx_bits, skip_full, out):
    """Per-tile greedy (comparison sort) for all tiles, or only the edge tiles with ``skip_full``."""
    R, C = A.shape
    TR = (R + m - 1) // m
    TC = (C + m - 1) // m
    rowof, colof = _index_tables(m, idx_bits)
    fallbacks = 0
    for ti in nb.prange(TR):
        keys = np.zeros(m * m, dtype=np.int64)
        w, x, rowcnt, colcnt, pot, dist, prev, done, sortbuf, fbuf, fidx = _approx_workspace(m)
        local_fallbacks = 0
        i0 = ti * m
        r = min(m, R - i0)
        for tj in range(TC):
            j0 = tj * m
            c = min(m, C - j0)
            full = r == m and c == m
            if full and skip_full:
                continue
            kept = _greedy_tile(bits, i0, j0, r, c, n, m, idx_bits, f64, keys, rowof, colof, x, rowcnt, colcnt)
            if full and not at_most and kept < n * m:
                local_fallbacks += _complete_tile(A, i0, j0, n, m, x, rowcnt, colcnt, w, pot, dist, prev, done, sortbuf, fbuf, fidx)
            for i in range(r):
                for j in range(c):
                    out[i0 + i, j0 + j] = x[i, j] != 0
        fallbacks += local_fallbacks
    return fallbacks


SMALL_M = 8  # m <= 8 or m == 16: sorting network across tiles + packed 4-bit counters
NETWORK_M = 32  # m*m <= 1024 keys: sorting network across tiles + scalar scan
NETWORK_KEY_BYTES = 1 << 17  # keys of one chunk of tiles (k x chunk int64) stay in L2


def solve(A: np.ndarray, n: int, m: int, keep: str, return_fallbacks: bool = False):
    """Greedy 2-approximation (see the module docstring and :func:`transmask.optimal_mask`)."""
    f64 = A.dtype == np.float64
    bits = A.view(np.uint64 if f64 else np.uint32)
    idx_bits = max(1, int(m * m - 1).bit_length())
    if not f64 and 31 + idx_bits > 62:  # pragma: no cover - only for m > 2**15
        raise ValueError(f"m={m} is too large for the approximation's sort keys")
    R, C = A.shape
    at_most = keep == "at_most"
    out = np.empty(A.shape, dtype=np.bool_)
    fallbacks = 0
    vectorised = m <= NETWORK_M and R >= m and C >= m
    chunk = min(256, max(4, NETWORK_KEY_BYTES // (8 * m * m)))
    if vectorised and (m <= SMALL_M or m == 16):
        fallbacks += _greedy_small_kernel(A, bits, n, m, at_most, f64, idx_bits, sorting_network(m * m), chunk, out)
    elif vectorised:
        fallbacks += _greedy_network_kernel(A, bits, n, m, at_most, f64, idx_bits, sorting_network(m * m), chunk, out)
    if not (vectorised and R % m == 0 and C % m == 0):
        fallbacks += _approx_kernel(A, bits, n, m, at_most, f64, idx_bits, vectorised, out)
    return (out, fallbacks) if return_fallbacks else out
