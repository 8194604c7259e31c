r"""Triton kernels of the device solver: exact transposable masks for a block of tiles per program.

Two kernels, both with one program per block of ``BT`` tiles and every tile held
in registers as a slice of a ``[BT, MP, MP]`` block (``MP`` = ``m`` rounded up to a
power of two; entries beyond ``m`` are absent):

* :func:`_pattern_kernel` (full tiles, ``keep="exactly"``, ``m <= 4``): the tile's
  16 magnitudes times the 0/1 matrix of all valid patterns (90 for 2:4) in one
  ``tl.dot`` gives every pattern's kept magnitude; the best pattern's bits are
  read back from a table.
* :func:`_flow_kernel` (every other tile): for full tiles, ``ROUNDS`` rounds of
  dual coordinate ascent (row and column prices set in turn to the midpoint of
  the n-th and (n+1)-th largest reduced magnitude, by counting along the last
  axis of the block and of its transposed copy), each row's top-n at the prices,
  then successive shortest paths that move the excess of over-full columns to
  short ones (Dijkstra over the m columns, rows folded into composite edges),
  in lockstep for the tiles of the block. With ``keep="at_most"`` a tile keeps
  that optimum when its prices prove it optimal with at most ``n`` too
  (``min u + min v >= 0``); otherwise, and for tiles cut by the matrix edge
  (at most n among their real entries), the tile restarts from each row's
  plain top-n and a circulation (two more nodes: sink ``T`` and source ``S``)
  moves or drops the excess.

This is the algorithm of :mod:`transmask.solvers.exact` (see
:mod:`transmask.solvers._tile_flow` for the networks and the potentials),
written for blocks instead of SIMD lanes. Each tile is scaled by a power of two
so that its largest magnitude lies in [1, 2): exact in binary floating point,
it keeps every sum and potential far from overflow (fp32 inputs up to 3.4e38)
and subnormals. float16/bfloat16/float32 inputs are solved in float32, float64
inputs in float64. Floating-point contraction is off (``enable_fp_fusion=False``)
and every reduction over floats sums a single nonzero term, so a GPU rounds
exactly as the interpreter the tests run, and the mask does not depend on the
launch configuration.

References: R. K. Ahuja, T. L. Magnanti, J. B. Orlin, *Network Flows*, 1993,
sec. 9.7 (successive shortest paths with potentials); D. P. Bertsekas, *Network
Optimization*, 1998, ch. 6 (dual coordinate ascent).
"""
from __future__ import annotations

import triton
import triton.language as tl

#: True when Triton's interpreter was active when this module was imported.
INTERPRET: bool = bool(triton.knobs.runtime.interpret)

_NO_PREV: tl.constexpr = tl.constexpr(-1)  # a path's first column
_FROM_T: tl.constexpr = tl.constexpr(-2)  # reached from the sink T


@triton.jit
def _pow2_scale(amax, F64: tl.constexpr):
    """``2**e`` with ``amax * 2**e`` in [1, 2) (clamped to the normal range), from the exponent bits."""
    if F64:
        e = (amax.to(tl.int64, bitcast=True) >> 52) & 0x7FF
        s = tl.maximum(2046 - e, 1) << 52
        return s.to(tl.float64, bitcast=True)
    else:
        e = (amax.to(tl.int32, bitcast=True) >> 23) & 0xFF
        s = tl.maximum(254 - e, 1) << 23
        return s.to(tl.float32, bitcast=True)


@triton.jit
def _count_greater(d, MP: tl.constexpr):
    """``cg[b, i, j] = #{k : d[b, i, k] > d[b, i, j]}``: how many entries of its last-axis line beat each entry.

    Counted over k: ``MP`` steps of one comparison per entry (plus the broadcast of entry k),
    few registers. Absent entries must hold ``-inf``. Why counting, not ``tl.sort``: it gives
    the order statistics in one pass with about as many operations for ``MP <= 32``, and
    Triton's interpreter runs it about 100x faster (its sort reduces element by element in
    Python).
    """
    cg = tl.zeros(d.shape, dtype=tl.int32)
    kcol = tl.zeros(d.shape, dtype=tl.int32)
    for k in range(MP):
        dk = tl.gather(d, kcol + k, axis=2)
        cg += (dk > d).to(tl.int32)
    return cg


@triton.jit
def _order_stat(d, cg, r: tl.constexpr):
    """The ``r``-th largest value of each last-axis line (0 = largest, ties counted): ``[BT, MP]``.

    An entry is among the ``r + 1`` largest exactly when fewer than ``r + 1`` entries beat it,
    so the r-th largest is the smallest of those (no tie-breaking needed).
    """
    return tl.min(tl.where(cg <= r, d, float("inf")), axis=2)


@triton.jit
def _top_n(d, present, N: tl.constexpr, MP: tl.constexpr):
    """Each row's N largest entries of ``d`` (absent entries ``-inf``), ties to the lower columns (int8 mask).

    A row with fewer than N present entries keeps all of them.
    """
    thr = _order_stat(d, _count_greater(d, MP), N - 1)[:, :, None]
    gt = (d > thr) & present
    eq = (d == thr) & present
    eqi = eq.to(tl.int32)
    before = tl.cumsum(eqi, axis=2) - eqi  # ties at the threshold to the left of each entry
    above = tl.sum(gt.to(tl.int32), axis=2)[:, :, None]
    return (gt | (eq & (before < N - above))).to(tl.int8)


@triton.jit
def _column_excess(x, tiles, N: tl.constexpr):
    """Per-column counts of kept entries and the tile's total excess over N (0 for tiles not in ``tiles``)."""
    colcnt = tl.sum(x.to(tl.int32), axis=1)
    return colcnt, tl.where(tiles, tl.sum(tl.maximum(colcnt - N, 0), axis=1), 0)


@triton.jit
def _repair(a, x, colcnt, pot, excess, realc,
            N: tl.constexpr, M: tl.constexpr, MP: tl.constexpr, BT: tl.constexpr, AT_MOST: tl.constexpr):
    """Successive shortest paths for every tile of the block with ``excess > 0``, in lockstep.

    ``a`` holds magnitudes ``[BT, MP, MP]``, ``x`` a row-feasible 0/1 mask (int8),
    ``colcnt`` its column counts, ``realc`` ``[BT, MP]`` the columns that exist (absent
    rows keep nothing, so they are never reached), and ``pot`` column potentials giving every
    composite edge ``column j -> row i -> column k`` (drop (i, j), keep (i, k)) a
    non-negative reduced cost ``a[i, j] - a[i, k] + pot[j] - pot[k]``.

    ``AT_MOST=False``: paths run from over-full columns to short ones (exactly n
    per column at the end). ``AT_MOST=True``: a circulation with a sink ``T`` and a
    source ``S`` (potentials 0 at the start): a path ends at ``S`` either through
    a column with room (``column -> T -> S``) or by dropping the unit
    (``column j -> row i -> S``); ``T -> column k`` undoes a unit of column k.
    Node order for ties: columns, then ``S``, then ``T`` (as the CPU kernel's
    numbering). Returns ``(x, colcnt, pot, failed)``; ``failed`` marks tiles where
    no path existed (cannot happen for valid input; reported to the caller).
    """
    ii = tl.arange(0, MP)
    jr = ii[None, :]
    i3 = ii[None, :, None]
    j3 = ii[None, None, :]
    INF: tl.constexpr = float("inf")
    zero = tl.zeros([BT], dtype=a.dtype)
    potT = zero
    potS = zero
    failed = tl.zeros([BT], dtype=tl.int32)
    while tl.max(excess, axis=0) > 0:
        active = excess > 0
        dist = tl.where(active[:, None] & (colcnt > N) & realc, 0.0, INF).to(a.dtype)
        done = tl.zeros([BT, MP], dtype=tl.int32)
        prev = tl.full([BT, MP], _NO_PREV, dtype=tl.int32)
        rowval = tl.full([BT, MP], INF, dtype=a.dtype)
        dT = zero + INF
        dS = zero + INF
        doneT = tl.zeros([BT], dtype=tl.int32)
        prevT = tl.zeros([BT], dtype=tl.int32)
        prevS = tl.full([BT], _FROM_T, dtype=tl.int32)
        target = tl.full([BT], -1, dtype=tl.int32)
        reached = tl.zeros([BT], dtype=tl.int32)
        searching = active.to(tl.int32)
        while tl.max(searching, axis=0) > 0:
            dd = tl.where((done == 0) & realc, dist, INF)
            bc, uc = tl.min(dd, axis=1, return_indices=True, return_indices_tie_break_left=True)
            uc = uc.to(tl.int32)
            onec = jr == uc[:, None]
            cu = tl.sum(tl.where(onec, colcnt, 0), axis=1)
            if AT_MOST:
                dTo = tl.where(doneT == 0, dT, INF)
                pick_col = (bc <= dS) & (bc <= dTo)
                pick_S = (~pick_col) & (dS <= dTo)
                best = tl.where(pick_col, bc, tl.where(pick_S, dS, dTo))
                ok = (searching > 0) & (best < INF)
                failed = tl.where((searching > 0) & (~ok), 1, failed)
                reached = tl.where(ok & pick_S, 1, reached)
                colstep = ok & pick_col
                tstep = ok & (~pick_col) & (~pick_S)
                searching = (colstep | tstep).to(tl.int32)
            else:
                best = bc
                ok = (searching > 0) & (bc < INF)
                failed = tl.where((searching > 0) & (~ok), 1, failed)
                hit = ok & (cu < N)
                target = tl.where(hit, uc, target)
                reached = tl.where(hit, 1, reached)
                colstep = ok & (~hit)
                searching = colstep.to(tl.int32)
            # settle column uc: rows that keep it get a value, and relax the columns they drop
            done = tl.where(onec & colstep[:, None], 1, done)
            base = best + tl.sum(tl.where(onec, pot, 0.0), axis=1)
            sel = j3 == uc[:, None, None]
            wu = tl.sum(tl.where(sel, a, 0.0), axis=2)
            xu = tl.sum(tl.where(sel, x, 0).to(tl.int32), axis=2)
            val = base[:, None] + wu
            upd = colstep[:, None] & (xu > 0) & (val < rowval)
            rowval = tl.where(upd, val, rowval)
            nd = val[:, :, None] - a - pot[:, None, :]
            okk = upd[:, :, None] & (x == 0) & realc[:, None, :] & (done[:, None, :] == 0)
            nd = tl.where(okk, nd, INF)
            mn, mi = tl.min(nd, axis=1, return_indices=True, return_indices_tie_break_left=True)
            better = mn < dist
            dist = tl.where(better, mn, dist)
            prev = tl.where(better, mi.to(tl.int32) * MP + uc[:, None], prev)
            if AT_MOST:
                # a column with room passes the unit on to the sink
                ndT = base - potT
                tb = colstep & (cu < N) & (doneT == 0) & (ndT < dT)
                dT = tl.where(tb, ndT, dT)
                prevT = tl.where(tb, uc, prevT)
                # a row reached from column uc gives its unit back to the source
                ndS = tl.where(upd, val - potS[:, None], INF)
                mS, iS = tl.min(ndS, axis=1, return_indices=True, return_indices_tie_break_left=True)
                sb = colstep & (mS < dS)
                dS = tl.where(sb, mS, dS)
                prevS = tl.where(sb, iS.to(tl.int32) * MP + uc, prevS)
                # settle T: on to the source, or back into columns that send it flow
                doneT = tl.where(tstep, 1, doneT)
                nd2 = best + potT - potS
                sb2 = tstep & (nd2 < dS)
                dS = tl.where(sb2, nd2, dS)
                prevS = tl.where(sb2, _FROM_T, prevS)
                ndc = (best + potT)[:, None] - pot
                cb = tstep[:, None] & (colcnt > 0) & realc & (done == 0) & (ndc < dist)
                dist = tl.where(cb, ndc, dist)
                prev = tl.where(cb, _FROM_T, prev)
        aug = reached > 0
        # potentials: every node moves by min(dist, dist of the path's end)
        if AT_MOST:
            dt = dS
        else:
            dt = tl.sum(tl.where(jr == target[:, None], dist, 0.0), axis=1)
        pot = pot + tl.where(aug[:, None], tl.minimum(dist, dt[:, None]), 0.0)
        if AT_MOST:
            potT = potT + tl.where(aug, tl.minimum(dT, dt), 0.0)
            potS = potS + tl.where(aug, dt, 0.0)
        # walk the path back: kind 0 = a column (cur), 1 = S, 2 = T
        if AT_MOST:
            kind = tl.where(aug, 1, 0)
            cur = tl.zeros([BT], dtype=tl.int32)
        else:
            kind = tl.zeros([BT], dtype=tl.int32)
            cur = tl.where(aug, target, 0)
            colcnt = colcnt + tl.where(aug[:, None] & (jr == target[:, None]), 1, 0)
        walking = aug
        while tl.max(walking.to(tl.int32), axis=0) > 0:
            pc = tl.sum(tl.where(jr == cur[:, None], prev, 0), axis=1)
            at_c = walking & (kind == 0)
            # column cur reached through row i from column j: keep (i, cur), drop (i, j)
            move = at_c & (pc >= 0)
            pi = tl.where(move, pc // MP, -1)
            pj = tl.where(move, pc % MP, 0)
            on_row = i3 == pi[:, None, None]
            x = tl.where(on_row & (j3 == cur[:, None, None]), 1, x).to(tl.int8)
            x = tl.where(on_row & (j3 == pj[:, None, None]), 0, x).to(tl.int8)
            # the path's first column, or a column fed back from T, loses a unit
            lose = at_c & (pc < 0)
            colcnt = colcnt - tl.where(lose[:, None] & (jr == cur[:, None]), 1, 0)
            nkind = tl.where(at_c & (pc == _FROM_T), 2, kind)
            ncur = tl.where(move, pj, cur)
            nwalk = walking & ~(at_c & (pc == _NO_PREV))
            if AT_MOST:
                at_s = walking & (kind == 1)
                s_row = at_s & (prevS >= 0)
                si = tl.where(s_row, prevS // MP, -1)
                sj = prevS % MP
                x = tl.where((i3 == si[:, None, None]) & (j3 == sj[:, None, None]), 0, x).to(tl.int8)
                nkind = tl.where(at_s, tl.where(s_row, 0, 2), nkind)
                ncur = tl.where(s_row, sj, ncur)
                at_t = walking & (kind == 2)
                colcnt = colcnt + tl.where(at_t[:, None] & (jr == prevT[:, None]), 1, 0)
                nkind = tl.where(at_t, 0, nkind)
                ncur = tl.where(at_t, prevT, ncur)
            kind = nkind
            cur = ncur
            walking = nwalk
        excess = tl.where(failed > 0, 0, excess - aug.to(tl.int32))
    return x, colcnt, pot, failed


@triton.jit
def _flow_kernel(w_ptr, out_ptr, status_ptr, R, C, stride_r, stride_c, out_stride_r,
                 ti0, tj0, n_tc, n_tiles,
                 N: tl.constexpr, M: tl.constexpr, MP: tl.constexpr, BT: tl.constexpr,
                 ROUNDS: tl.constexpr, AT_MOST: tl.constexpr, F64: tl.constexpr):
    """Exact masks of tiles ``ti0 + t // n_tc, tj0 + t % n_tc`` for ``t`` in this program's block of BT."""
    DT: tl.constexpr = tl.float64 if F64 else tl.float32
    INF: tl.constexpr = float("inf")
    pid = tl.program_id(0)
    t = pid * BT + tl.arange(0, BT)
    tvalid = t < n_tiles
    ti = ti0 + t // n_tc
    tj = tj0 + t % n_tc
    ii = tl.arange(0, MP)
    i3 = ii[None, :, None]
    j3 = ii[None, None, :]
    present = (i3 < M) & (j3 < M)
    r0 = ti.to(tl.int64)[:, None, None] * M
    c0 = tj.to(tl.int64)[:, None, None] * M
    rows = r0 + i3
    cols = c0 + j3
    inm = tvalid[:, None, None] & present & (rows < R) & (cols < C)
    a = tl.abs(tl.load(w_ptr + rows * stride_r + cols * stride_c, mask=inm, other=0.0).to(DT))
    # the same tiles transposed: aT[b, j, i] = a[b, i, j] (column order statistics are counted along the last axis)
    rowsT = r0 + j3
    colsT = c0 + i3
    inmT = tvalid[:, None, None] & present & (rowsT < R) & (colsT < C)
    aT = tl.abs(tl.load(w_ptr + rowsT * stride_r + colsT * stride_c, mask=inmT, other=0.0).to(DT))
    scale = _pow2_scale(tl.max(tl.max(a, axis=2), axis=1), F64)
    a = a * scale[:, None, None]
    aT = aT * scale[:, None, None]
    full = tvalid & (ti * M + M <= R) & (tj * M + M <= C)
    jr = ii[None, :]

    # 1. full tiles, exactly n: dual prices, row top-n at the prices, column repair
    v = tl.zeros([BT, MP], dtype=DT)
    for _ in tl.static_range(ROUNDS):
        dr = tl.where(present, a - v[:, None, :], -INF)
        cg = _count_greater(dr, MP)
        u = tl.where(jr < M, 0.5 * (_order_stat(dr, cg, N - 1) + _order_stat(dr, cg, N)), 0.0)
        dc = tl.where(present, aT - u[:, None, :], -INF)
        cg = _count_greater(dc, MP)
        v = tl.where(jr < M, 0.5 * (_order_stat(dc, cg, N - 1) + _order_stat(dc, cg, N)), 0.0)
    # each row's top-n of a - v (ties to the lower column): optimal for the rows, -v valid potentials
    x = _top_n(tl.where(present, a - v[:, None, :], -INF), present, N, MP)
    colcnt, excess = _column_excess(x, full, N)
    x, colcnt, pot, failed = _repair(a, x, colcnt, -v, excess, jr < M, N, M, MP, BT, False)

    # 2. tiles cut by the edge (their real entries only) and, with at most n, full tiles whose
    #    prices do not prove the exactly-n optimum optimal: each row's plain top-n (all of a row
    #    with fewer than n real entries), then the circulation. A tile with more real rows than
    #    columns is solved transposed (the problem is symmetric): its rows then hold at most n
    #    each from the start, and the circulation has less excess to move.
    if AT_MOST:
        umin = tl.min(tl.min(tl.where((x > 0) & present, a + pot[:, None, :], INF), axis=2), axis=1)
        vmin = tl.min(tl.where(jr < M, -pot, INF), axis=1)
        again = tvalid & ((~full) | (umin + vmin < 0))
    else:
        again = tvalid & (~full)
    rreal = tl.minimum(R - ti * M, M)
    creal = tl.minimum(C - tj * M, M)
    transposed = again & (rreal > creal)
    tall = transposed[:, None, None]
    if tl.max(again.to(tl.int32), axis=0) > 0:
        b = tl.where(tall, aT, a)
        inb = tl.where(tall, inmT, inm)
        x0 = _top_n(tl.where(inb, b, -INF), inb, N, MP)
        colcnt0, excess0 = _column_excess(x0, again, N)
        colreal = jr < tl.where(transposed, rreal, creal)[:, None]
        x0, colcnt0, pot0, failed0 = _repair(b, x0, colcnt0, tl.zeros([BT, MP], dtype=DT), excess0, colreal,
                                             N, M, MP, BT, True)
        x = tl.where(again[:, None, None], x0, x)
        failed = failed | failed0
    tl.store(out_ptr + rows * out_stride_r + cols, x, mask=inm & (~tall))
    tl.store(out_ptr + rowsT * out_stride_r + colsT, x, mask=inmT & tall)
    nfail = tl.sum(tl.where(tvalid, failed, 0), axis=0)
    if nfail > 0:
        tl.atomic_add(status_ptr, nfail)


@triton.jit
def _pattern_kernel(w_ptr, out_ptr, scores_ptr, bits_ptr, R, C, stride_r, stride_c, out_stride_r,
                    n_tc, n_tiles,
                    M: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, BT: tl.constexpr, F64: tl.constexpr):
    """Full tiles, exactly n, m <= 4: the best of the K valid patterns by one product per block of tiles."""
    DT: tl.constexpr = tl.float64 if F64 else tl.float32
    E: tl.constexpr = 16
    pid = tl.program_id(0)
    t = pid * BT + tl.arange(0, BT)
    tvalid = t < n_tiles
    ti = (t // n_tc).to(tl.int64)
    tj = (t % n_tc).to(tl.int64)
    e = tl.arange(0, E)
    er = e // M
    ec = e % M
    ok = tvalid[:, None] & (e[None, :] < M * M)
    rows = ti[:, None] * M + er[None, :]
    cols = tj[:, None] * M + ec[None, :]
    a = tl.abs(tl.load(w_ptr + rows * stride_r + cols * stride_c, mask=ok, other=0.0).to(DT))
    a = a * _pow2_scale(tl.max(a, axis=1), F64)[:, None]
    p = tl.arange(0, KP)
    P = tl.load(scores_ptr + e[:, None] * KP + p[None, :]).to(DT)
    score = tl.dot(a, P, input_precision="ieee", out_dtype=DT)
    score = tl.where(p[None, :] < K, score, float("-inf"))
    _, best = tl.max(score, axis=1, return_indices=True, return_indices_tie_break_left=True)
    bits = tl.load(bits_ptr + best[:, None] * E + e[None, :])
    tl.store(out_ptr + rows * out_stride_r + cols, bits, mask=ok)


# ---------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------

# Dual-ascent rounds before the repair. Each round costs two counting passes (about 1.5 k warp
# instructions per 16 x 16 tile in the sm_90 build) and saves augmenting paths (8:16 Gaussian
# tiles need 12.6 / 3.7 / 2.0 / 1.4 paths after 0 / 1 / 2 / 3 rounds, about 1.9 k instructions each):
# 2 and 3 rounds cost about the same by this count; 3 as the CPU solver. The GPU bench sweeps 2-4.
DUAL_ROUNDS = 3
PATTERN_MAX_M = 4  # K(4, 2) = 90 patterns per tile; K(5, 2) = 2040 would not pay off


def _next_pow2(k: int) -> int:
    p = 1
    while p < k:
        p *= 2
    return p


#: Default launch configuration per tile size MP (m rounded up to a power of two): tiles per
#: program and warps. Chosen from register counts of the sm_90 build (ptxas: 80-120 registers,
#: no spills) with 2-8 block entries per thread: small blocks keep the lockstep repair from
#: waiting on the slowest of many tiles, and a single warp reduces with shuffles only (no
#: shared memory, no barriers). To be confirmed by bench/_gpu_solver_check.py on a GPU.
FLOW_CONFIGS = {2: (32, 1), 4: (4, 1), 8: (2, 1), 16: (1, 1), 32: (1, 4), 64: (1, 8)}
PATTERN_CONFIG = (64, 4)  # tiles per program (the M of its tl.dot, >= 16) and warps


def flow_config(m: int, tiles: int | None = None) -> tuple[int, int]:
    """``(tiles per program, warps)`` of :func:`_flow_kernel` for tile size m.

    The interpreter runs each operation as one numpy call on the whole block, so its
    cost is the number of operations, not their size: there one block takes all
    ``tiles`` (up to 65536 entries).
    """
    mp = _next_pow2(m)
    if INTERPRET:
        return min(max(1, 65536 // (mp * mp)), _next_pow2(tiles or 1)), 1
    return FLOW_CONFIGS[mp]


def pattern_config(tiles: int | None = None) -> tuple[int, int]:
    """``(tiles per program, warps)`` of :func:`_pattern_kernel`."""
    if INTERPRET:
        return min(4096, max(16, _next_pow2(tiles or 1))), 1
    return PATTERN_CONFIG


_TABLES: dict = {}


def _tables_on(device, n: int, m: int):
    from ._patterns import pattern_tables
    import torch

    key = (str(device), n, m)
    if key not in _TABLES:
        scores, bits, K = pattern_tables(n, m)
        _TABLES[key] = (torch.from_numpy(scores.copy()).to(device), torch.from_numpy(bits.copy()).to(device), K)
    return _TABLES[key]


def solve(A, n: int, m: int, keep: str, flow: tuple[int, int] | None = None,
          pattern: tuple[int, int] | None = None, rounds: int = DUAL_ROUNDS):
    """Launch the kernels on a 2-D float16/bfloat16/float32/float64 tensor; return ``(mask, failures)``.

    ``A`` may hold signs (magnitudes are used) and any strides; ``1 <= n < m``.
    ``failures`` is a one-element int32 tensor on the device: the number of tiles
    where a repair found no path (0 unless something is broken; the caller checks
    it). Nothing is copied to the host. ``flow`` and ``pattern`` override the
    launch configurations ``(tiles per program, warps)``, ``rounds`` the number of
    dual-ascent rounds (for benchmarks; every choice gives an optimal mask).
    """
    import contextlib

    import torch

    # Triton launches on the current CUDA device: make it A's
    with torch.cuda.device(A.device) if A.device.type == "cuda" else contextlib.nullcontext():
        return _launch(A, n, m, keep, flow, pattern, rounds, torch)


def _launch(A, n, m, keep, flow, pattern, rounds, torch):
    R, C = A.shape
    device = A.device
    out = torch.empty((R, C), dtype=torch.bool, device=device)
    o8 = out.view(torch.uint8)
    failures = torch.zeros(1, dtype=torch.int32, device=device)
    f64 = A.dtype == torch.float64
    TR, TC = -(-R // m), -(-C // m)
    TRf, TCf = R // m, C // m
    if keep == "exactly" and m <= PATTERN_MAX_M and TRf > 0 and TCf > 0:
        scores, bits, K = _tables_on(device, n, m)
        tiles = TRf * TCf
        bt, nw = pattern or pattern_config(tiles)
        _pattern_kernel[(triton.cdiv(tiles, bt),)](
            A, o8, scores, bits, R, C, A.stride(0), A.stride(1), C, TCf, tiles,
            M=m, K=K, KP=scores.shape[1], BT=bt, F64=f64, num_warps=nw,
            enable_fp_fusion=False)
        regions = []
        if R % m:
            regions.append((TR - 1, 0, 1, TC))  # the last tile-row, corner included
        if C % m:
            regions.append((0, TC - 1, TRf, 1))  # the last tile-column above it
    else:
        regions = [(0, 0, TR, TC)]
    for ti0, tj0, ntr, ntc in regions:
        tiles = ntr * ntc
        bt, nw = flow or flow_config(m, tiles)
        _flow_kernel[(triton.cdiv(tiles, bt),)](
            A, o8, failures, R, C, A.stride(0), A.stride(1), C, ti0, tj0, ntc, tiles,
            N=n, M=m, MP=_next_pow2(m), BT=bt, ROUNDS=rounds, AT_MOST=keep == "at_most", F64=f64,
            num_warps=nw, enable_fp_fusion=False)
    return out, failures


def compile_for(target, kernel: str = "flow", n: int = 8, m: int = 16, keep: str = "exactly",
                dtype: str = "fp32", config: tuple[int, int] | None = None, aligned: bool = True,
                rounds: int = DUAL_ROUNDS):
    """Compile one kernel ahead of time for a GPU ``target`` (no GPU needed), e.g. in CI.

    Parameters
    ----------
    target : triton.backends.compiler.GPUTarget
        E.g. ``GPUTarget("cuda", 90, 32)`` (H100/H200) or ``GPUTarget("cuda", 80, 32)`` (A100).
    kernel : {"flow", "pattern"}
    n, m, keep, dtype
        The specialisation: ``dtype`` is the input's (``fp16``, ``bf16``, ``fp32``, ``fp64``).
    config : (tiles per program, warps), optional
        Default: the launch configuration :func:`solve` uses.
    aligned : bool
        Specialise as the JIT does for a contiguous matrix whose sides are multiples of 16
        (pointers 16-byte aligned, sizes and row strides divisible by 16, column stride 1:
        the variant that runs on an 8192 x 8192 matrix); False: the most general variant.

    Returns
    -------
    triton.compiler.CompiledKernel
        ``.asm`` holds the ``ttir``/``ttgir``/``llir``/``ptx``/``cubin`` stages; ``.n_regs``
        and ``.n_spills`` the register use.
    """
    from triton.compiler import ASTSource

    if INTERPRET:
        raise RuntimeError("compile_for needs the real Triton JIT; import this module without TRITON_INTERPRET=1")
    if dtype not in ("fp16", "bf16", "fp32", "fp64"):
        raise ValueError(f"dtype must be fp16, bf16, fp32 or fp64, got {dtype!r}")
    ptr = "*" + dtype
    f64 = dtype == "fp64"
    if kernel == "pattern":
        from ._patterns import pattern_tables

        scores, _, K = pattern_tables(n, m)
        sig = {"w_ptr": ptr, "out_ptr": "*u8", "scores_ptr": "*fp32", "bits_ptr": "*u8", "R": "i32", "C": "i32",
               "stride_r": "i32", "stride_c": "i32", "out_stride_r": "i32", "n_tc": "i32", "n_tiles": "i32"}
        bt, nw = config or pattern_config()
        constexprs = {"M": m, "K": K, "KP": scores.shape[1], "BT": bt, "F64": f64}
        fn = _pattern_kernel
    elif kernel == "flow":
        sig = {"w_ptr": ptr, "out_ptr": "*u8", "status_ptr": "*i32", "R": "i32", "C": "i32",
               "stride_r": "i32", "stride_c": "i32", "out_stride_r": "i32",
               "ti0": "i32", "tj0": "i32", "n_tc": "i32", "n_tiles": "i32"}
        bt, nw = config or flow_config(m)
        constexprs = {"N": n, "M": m, "MP": _next_pow2(m), "BT": bt,
                      "ROUNDS": rounds, "AT_MOST": keep == "at_most", "F64": f64}
        fn = _flow_kernel
    else:
        raise ValueError(f"kernel must be 'flow' or 'pattern', got {kernel!r}")
    if aligned:
        constexprs["stride_c"] = 1
    for name in constexprs:
        sig[name] = "constexpr"
    names = list(sig)
    attrs = {}
    if aligned:  # what the JIT's specialisation finds: every pointer and runtime integer divisible by 16
        attrs = {(names.index(k),): [["tt.divisibility", 16]] for k, v in sig.items() if v != "constexpr"}
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=target, options={"num_warps": nw, "enable_fp_fusion": False})
