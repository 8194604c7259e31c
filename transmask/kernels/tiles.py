"""Triton device functions shared by the N:M kernels: expand a compressed tile, gather the kept entries of a dense one.

Both work on a ``(BLOCK_R, BLOCK_K)`` tile of a matrix ``A`` (``R x KW``) stored as
:class:`transmask.sparse.CompressedNM` (``values`` ``(R, S)`` with ``S = ceil(KW/m) * n``
slots per row, ``indices`` ``(R, ceil(S / P))`` int32 words of ``P`` ``BITS``-bit fields).

Expansion (:func:`load_dense_tile`) has two paths, chosen at compile time:

* **word path** (16-bit values, ``m`` in {2, 4}, ``n`` dividing ``P``; 2:4 fp16/bf16 is the
  case that matters): the values tile is loaded as one contiguous ``(BLOCK_R, BLOCK_S)`` block
  (128-bit loads) and the index words as one ``(BLOCK_R, BLOCK_S / P)`` block, each word once.
  A group of ``m <= 4`` dense 16-bit entries fits one 64-bit integer, so the group is built
  by shifting every kept value's bits to its position, ``D = OR_s v_s << (16 * idx_s)``, and
  the 16-bit entries are ``D >> (16 * p)``. The shift amounts ``16 * idx_s`` come out of the
  word with one funnel shift and one mask per field (the word is shifted left by 4 once, as a
  64-bit integer, so that ``(w << 4) >> (BITS * j)`` masked with ``(2**BITS - 1) << 4`` is
  ``16 * idx_j``). Every thread owns whole groups (the tile is viewed as
  ``(BLOCK_R, words, groups per word, n)``), so no value crosses threads. Padding slots hold
  the value 0, so OR-ing them in changes nothing. Compiled for sm_90 this is about 0.22 warp
  instructions per dense weight in the main loop (``bench/kernel_sass.py``), against 0.53-0.73
  for the compare-and-select expansion it replaces.
* **slot path** (everything else: fp32, ``m >= 8``, ``n`` not dividing ``P``): for every slot
  ``s`` (a compile-time loop over ``n``) the slot's values and index fields are loaded as
  ``(BLOCK_R, BLOCK_K / m)`` tiles and written where the index matches ``arange(m)``, last
  slot first so that a padding slot (value 0, repeating the last kept position) never
  overwrites a kept value. Correct for every format; not tuned.

:func:`gather_kept` is the inverse (used for the weight gradient): the value of every slot is
the dense entry at its position, and padding slots get an exact 0 -- decoded from the index
layout for ``n >= 2`` (kept positions strictly increase, padding repeats the last one, an
empty group starts with a decrease), or from an explicit validity bitmask for ``n = 1``
(where an empty group cannot be told from one keeping position 0).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _bit_or(a, b):
    return a | b


@triton.jit
def load_dense_tile(
    v_ptr, i_ptr, r0, k0, R, KW, stride_vr, stride_ir,
    N_KEEP: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, PER_WORD: tl.constexpr,
    WORD_PATH: tl.constexpr, EVEN_R: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Dense ``(BLOCK_R, BLOCK_K)`` tile of ``A`` at rows ``r0..``, columns ``k0..`` (``k0 % BLOCK_K == 0``).

    Entries outside ``A`` are 0. Returns the values' dtype.
    """
    BLOCK_G: tl.constexpr = BLOCK_K // M
    offs_r = r0 + tl.arange(0, BLOCK_R)
    G = tl.cdiv(KW, M)  # groups per row; the last one may be cut by KW (its padding columns hold 0)
    if WORD_PATH:
        BLOCK_S: tl.constexpr = BLOCK_G * N_KEEP
        BLOCK_W: tl.constexpr = BLOCK_S // PER_WORD
        GPW: tl.constexpr = PER_WORD // N_KEEP  # groups per index word
        tl.static_assert(BLOCK_S % PER_WORD == 0, "word path: BLOCK_K must be a multiple of M * PER_WORD / N_KEEP")
        s0 = (k0 // M) * N_KEEP  # first slot; a multiple of PER_WORD (BLOCK_K is a multiple of M * PER_WORD / N_KEEP)
        offs_s = s0 + tl.arange(0, BLOCK_S)
        offs_w = s0 // PER_WORD + tl.arange(0, BLOCK_W)
        v_ptrs = v_ptr + offs_r[:, None] * stride_vr + offs_s[None, :]
        w_ptrs = i_ptr + offs_r[:, None] * stride_ir + offs_w[None, :]
        if EVEN_R and EVEN_K:
            v = tl.load(v_ptrs)
            w = tl.load(w_ptrs)
        else:
            r_ok = offs_r < R
            v = tl.load(v_ptrs, mask=r_ok[:, None] & (offs_s < G * N_KEEP)[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=r_ok[:, None] & (offs_w < tl.cdiv(G * N_KEEP, PER_WORD))[None, :], other=0)
        bits = v.to(tl.int16, bitcast=True).to(tl.uint16, bitcast=True)
        v4 = tl.reshape(bits, (BLOCK_R, BLOCK_W, GPW, N_KEEP)).to(tl.uint64)
        field = (tl.arange(0, GPW)[:, None] * N_KEEP + tl.arange(0, N_KEEP)[None, :]) * BITS  # bit offset of each slot
        w4 = w.to(tl.uint32, bitcast=True).to(tl.uint64) << 4
        shift = (w4[:, :, None, None] >> field[None, None, :, :].to(tl.uint64)) & (((1 << BITS) - 1) << 4)
        group = tl.reduce(v4 << shift, 3, _bit_or)  # (BLOCK_R, BLOCK_W, GPW): m 16-bit entries per uint64
        pos16 = (tl.arange(0, M) * 16).to(tl.uint64)
        dense = (group[:, :, :, None] >> pos16[None, None, None, :]).to(tl.uint16)
        dense = tl.reshape(dense, (BLOCK_R, BLOCK_K)).to(tl.int16, bitcast=True)
        return dense.to(v_ptr.dtype.element_ty, bitcast=True)
    else:
        offs_g = k0 // M + tl.arange(0, BLOCK_G)
        gmask = (offs_r < R)[:, None] & (offs_g < G)[None, :]
        pos = tl.arange(0, M)
        w3 = tl.zeros((BLOCK_R, BLOCK_G, M), dtype=v_ptr.dtype.element_ty)
        for j in tl.static_range(N_KEEP):
            s = N_KEEP - 1 - j  # last slot first: kept values (first slots) win over padding
            slot = offs_g * N_KEEP + s
            v = tl.load(v_ptr + offs_r[:, None] * stride_vr + slot[None, :], mask=gmask, other=0.0)
            word = tl.load(i_ptr + offs_r[:, None] * stride_ir + (slot // PER_WORD)[None, :], mask=gmask, other=0)
            # arithmetic shift of an int32 is fine: the field is masked afterwards
            idx = (word >> ((slot % PER_WORD) * BITS)[None, :]) & ((1 << BITS) - 1)
            w3 = tl.where(idx[:, :, None] == pos[None, None, :], v[:, :, None], w3)
        return tl.reshape(w3, (BLOCK_R, BLOCK_K))


@triton.jit
def gather_kept(
    dense, out_ptr, i_ptr, valid_ptr, r0, k0, R, KW, stride_or, stride_ir, stride_valid,
    N_KEEP: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, PER_WORD: tl.constexpr,
    HAS_VALID: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Store the kept entries of a dense ``(BLOCK_R, BLOCK_K)`` tile at rows ``r0..``, columns ``k0..`` as slot values.

    ``out[r, slot] = dense[r, position of slot]`` for kept slots, exactly 0 for padding slots,
    cast to ``out_ptr``'s dtype. ``HAS_VALID``: read slot validity from the packed bitmask
    ``valid_ptr`` (bit ``slot % 32`` of word ``slot // 32`` of each row), needed for ``n = 1``.
    """
    BLOCK_G: tl.constexpr = BLOCK_K // M
    offs_r = r0 + tl.arange(0, BLOCK_R)
    offs_g = k0 // M + tl.arange(0, BLOCK_G)
    G = tl.cdiv(KW, M)
    gmask = (offs_r < R)[:, None] & (offs_g < G)[None, :]
    d3 = tl.reshape(dense, (BLOCK_R, BLOCK_G, M))
    pos = tl.arange(0, M)
    prev = tl.zeros((BLOCK_R, BLOCK_G), dtype=tl.int32)
    for s in tl.static_range(N_KEEP):
        slot = offs_g * N_KEEP + s
        word = tl.load(i_ptr + offs_r[:, None] * stride_ir + (slot // PER_WORD)[None, :], mask=gmask, other=0)
        idx = (word >> ((slot % PER_WORD) * BITS)[None, :]) & ((1 << BITS) - 1)
        val = tl.sum(tl.where(idx[:, :, None] == pos[None, None, :], d3, 0.0), axis=2)
        if HAS_VALID:
            bit = tl.load(valid_ptr + offs_r[:, None] * stride_valid + (slot // 32)[None, :], mask=gmask, other=0)
            keep = ((bit >> (slot % 32)[None, :]) & 1) != 0
        elif s == 0:
            if N_KEEP >= 2:
                # an empty group is encoded [1, 0, ...]: a decrease between the first two slots
                slot1 = offs_g * N_KEEP + 1
                word1 = tl.load(i_ptr + offs_r[:, None] * stride_ir + (slot1 // PER_WORD)[None, :], mask=gmask, other=0)
                idx1 = (word1 >> ((slot1 % PER_WORD) * BITS)[None, :]) & ((1 << BITS) - 1)
                keep = idx1 >= idx
            else:
                keep = gmask
        else:
            keep = idx > prev  # kept positions strictly increase; padding repeats the last one
        prev = idx
        tl.store(out_ptr + offs_r[:, None] * stride_or + slot[None, :],
                 tl.where(keep, val, 0.0).to(out_ptr.dtype.element_ty), mask=gmask)
