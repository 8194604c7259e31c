"""Triton kernels between compressed and dense N:M storage, and the weight gradient at the kept entries only.

* :func:`nm_decompress` -- ``values``/``indices`` to the dense matrix (for cuBLAS on many tokens);
* :func:`nm_compress_like` -- the kept entries of a dense matrix under an existing index layout
  (e.g. a dense weight gradient from cuBLAS), padding slots exactly 0;
* :func:`nm_sddmm` -- ``dvalues = (dY.T @ X)`` at the kept entries, with the gather fused into
  the matmul's epilogue: the dense ``R x K`` gradient is never written to memory.

All read the index layout directly (no int64 gather maps): a slot's column is
``group * m + (its index field)``, and whether it is padding is decoded from the fields
(``n >= 2``) or read from a validity bitmask (``n = 1``, see :func:`valid_bitmask`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sparse import index_bits, indices_per_word
from .nm_kernel import INTERPRET, SUPPORTED_M, _t_bucket, uses_triton, word_path
from .tiles import gather_kept, load_dense_tile

__all__ = ["nm_decompress", "nm_compress_like", "nm_sddmm", "valid_bitmask"]

# tile of the element-wise conversion kernels: BLOCK_K = 64 is a multiple of m * P / n for
# every word-path format (32 for 2:4, 64 for 1:4 and 1:2) and of every supported m
_CONV_R, _CONV_K = 32, 64


@triton.jit
def _decompress_kernel(v_ptr, i_ptr, out_ptr, R, KW, stride_vr, stride_ir, stride_or,
                       N_KEEP: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, PER_WORD: tl.constexpr,
                       WORD_PATH: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    r0 = tl.program_id(0) * BLOCK_R
    k0 = tl.program_id(1) * BLOCK_K
    dense = load_dense_tile(v_ptr, i_ptr, r0, k0, R, KW, stride_vr, stride_ir, N_KEEP, M, BITS, PER_WORD,
                            WORD_PATH, False, False, BLOCK_R, BLOCK_K)
    offs_r = r0 + tl.arange(0, BLOCK_R)
    offs_k = k0 + tl.arange(0, BLOCK_K)
    tl.store(out_ptr + offs_r[:, None].to(tl.int64) * stride_or + offs_k[None, :], dense,
             mask=(offs_r < R)[:, None] & (offs_k < KW)[None, :])


@triton.jit
def _compress_kernel(d_ptr, i_ptr, valid_ptr, out_ptr, R, KW, stride_dr, stride_ir, stride_valid, stride_or,
                     N_KEEP: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, PER_WORD: tl.constexpr,
                     HAS_VALID: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    r0 = tl.program_id(0) * BLOCK_R
    k0 = tl.program_id(1) * BLOCK_K
    offs_r = r0 + tl.arange(0, BLOCK_R)
    offs_k = k0 + tl.arange(0, BLOCK_K)
    dense = tl.load(d_ptr + offs_r[:, None].to(tl.int64) * stride_dr + offs_k[None, :],
                    mask=(offs_r < R)[:, None] & (offs_k < KW)[None, :], other=0.0)
    gather_kept(dense.to(tl.float32), out_ptr, i_ptr, valid_ptr, r0, k0, R, KW, stride_or, stride_ir, stride_valid,
                N_KEEP, M, BITS, PER_WORD, HAS_VALID, BLOCK_R, BLOCK_K)


def _sddmm_configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_T": 16, "BLOCK_R": 32, "BLOCK_K": 64}, num_warps=4, num_stages=1)]
    return [
        # few tokens: the kernel is bound by writing the values; small tiles, many programs
        triton.Config({"BLOCK_T": 16, "BLOCK_R": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_T": 32, "BLOCK_R": 64, "BLOCK_K": 128}, num_warps=4, num_stages=3),
        # many tokens: a plain tensor-core GEMM with the gather in the epilogue
        triton.Config({"BLOCK_T": 64, "BLOCK_R": 128, "BLOCK_K": 128}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_T": 32, "BLOCK_R": 128, "BLOCK_K": 128}, num_warps=8, num_stages=4),
        triton.Config({"BLOCK_T": 64, "BLOCK_R": 64, "BLOCK_K": 128}, num_warps=4, num_stages=4),
    ]


def _sddmm_prune(configs, named_args, **kwargs):
    t_key = named_args["T_KEY"]
    keep = [c for c in configs if c.kwargs["BLOCK_T"] <= max(16, t_key)]
    if t_key >= 256:
        keep = [c for c in keep if c.kwargs["BLOCK_R"] >= 128] or keep
    return keep or configs[:1]


SDDMM_CONFIGS = _sddmm_configs()


@triton.autotune(configs=SDDMM_CONFIGS, key=["T_KEY", "R", "KW", "N_KEEP", "M"],
                 prune_configs_by={"early_config_prune": _sddmm_prune})
@triton.jit
def _sddmm_kernel(dy_ptr, x_ptr, i_ptr, valid_ptr, out_ptr, T, R, KW, T_KEY,
                  stride_dyt, stride_dyr, stride_xt, stride_xk, stride_ir, stride_valid, stride_or,
                  N_KEEP: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, PER_WORD: tl.constexpr,
                  HAS_VALID: tl.constexpr, UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                  BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    # out[r, slot] = sum_t dy[t, r] * x[t, column of slot], via a dense (BLOCK_R, BLOCK_K) tile
    r0 = tl.program_id(0) * BLOCK_R
    k0 = tl.program_id(1) * BLOCK_K
    offs_r = r0 + tl.arange(0, BLOCK_R)
    offs_k = k0 + tl.arange(0, BLOCK_K)
    r_ok = offs_r < R
    k_ok = offs_k < KW
    acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        t_ok = offs_t < T
        dy = tl.load(dy_ptr + offs_t[:, None].to(tl.int64) * stride_dyt + offs_r[None, :] * stride_dyr,
                     mask=t_ok[:, None] & r_ok[None, :], other=0.0)
        x = tl.load(x_ptr + offs_t[:, None].to(tl.int64) * stride_xt + offs_k[None, :] * stride_xk,
                    mask=t_ok[:, None] & k_ok[None, :], other=0.0)
        if UPCAST:
            dy = dy.to(tl.float32)
            x = x.to(tl.float32)
        acc = tl.dot(tl.trans(dy), x, acc, input_precision=INPUT_PRECISION, out_dtype=tl.float32)
    gather_kept(acc, out_ptr, i_ptr, valid_ptr, r0, k0, R, KW, stride_or, stride_ir, stride_valid,
                N_KEEP, M, BITS, PER_WORD, HAS_VALID, BLOCK_R, BLOCK_K)


def _check_layout(indices, K, n, m, rows=None):
    if m not in SUPPORTED_M:
        raise ValueError(f"the Triton kernels support m in {SUPPORTED_M}, got m={m}")
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= m, got n={n}, m={m}")
    if indices.dtype != torch.int32 or indices.dim() != 2:
        raise TypeError(f"indices must be a 2-D int32 tensor, got {indices.dtype} with shape {tuple(indices.shape)}")
    S = -(-K // m) * n
    if indices.shape[1] != -(-S // indices_per_word(m)) or (rows is not None and indices.shape[0] != rows):
        raise ValueError(f"indices shape {tuple(indices.shape)} does not fit {rows or indices.shape[0]} rows, K={K}, {n}:{m}")
    return S


def valid_bitmask(indices: torch.Tensor, K: int, n: int, m: int, valid=None) -> torch.Tensor | None:
    """Packed validity of every slot (bit ``s % 32`` of word ``s // 32`` of each row), or None when not needed.

    For ``n >= 2`` the kernels decode padding from the index fields, so this returns None.
    For ``n = 1`` an empty group cannot be told from one keeping position 0, so ``valid``
    (bool, shape ``(rows, slots)``, e.g. :meth:`CompressedNM.valid_slots` or, exactly, the
    slots whose dense column is kept by the mask) is packed into int32 words.
    """
    if n >= 2:
        return None
    S = _check_layout(indices, K, n, m)
    if valid is None:
        raise ValueError("n = 1 needs the slots' validity (empty groups look like position 0)")
    valid = torch.as_tensor(valid, device=indices.device).bool()
    if tuple(valid.shape) != (indices.shape[0], S):
        raise ValueError(f"valid must have shape {(indices.shape[0], S)}, got {tuple(valid.shape)}")
    words = -(-S // 32)
    padded = torch.zeros((valid.shape[0], words * 32), dtype=torch.int64, device=valid.device)
    padded[:, :S] = valid.to(torch.int64)
    packed = (padded.view(-1, words, 32) << torch.arange(32, device=valid.device)).sum(-1)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)  # two's complement into int32
    return packed.to(torch.int32).contiguous()


def _dummy(device):
    return torch.zeros(1, dtype=torch.int32, device=device)


def nm_decompress(values: torch.Tensor, indices: torch.Tensor, K: int, n: int, m: int) -> torch.Tensor:
    """Dense ``(R, K)`` matrix of compressed ``values``/``indices`` (Triton on CUDA or the interpreter).

    Equal bit for bit to :meth:`transmask.sparse.CompressedNM.decompress`.
    """
    _check_layout(indices, K, n, m, rows=values.shape[0])
    R = values.shape[0]
    if not uses_triton(values):
        from ..sparse import CompressedNM

        return CompressedNM(values, indices, (R, K), n, m).decompress()
    values, indices = values.contiguous(), indices.contiguous()
    out = torch.empty((R, K), dtype=values.dtype, device=values.device)
    if R and K:
        grid = (triton.cdiv(R, _CONV_R), triton.cdiv(K, _CONV_K))
        _decompress_kernel[grid](values, indices, out, R, K, values.stride(0), indices.stride(0), out.stride(0),
                                 N_KEEP=n, M=m, BITS=index_bits(m), PER_WORD=indices_per_word(m),
                                 WORD_PATH=word_path(values.dtype, n, m), BLOCK_R=_CONV_R, BLOCK_K=_CONV_K)
    return out


def nm_compress_like(dense: torch.Tensor, indices: torch.Tensor, n: int, m: int, valid_bits=None,
                     dtype=None) -> torch.Tensor:
    """Slot values of ``dense`` (``R x K``) under the index layout ``indices``; padding slots are exactly 0.

    ``valid_bits``: :func:`valid_bitmask` (needed for ``n = 1``). ``dtype``: of the result
    (default ``dense.dtype``).
    """
    R, K = dense.shape
    S = _check_layout(indices, K, n, m, rows=R)
    out = torch.empty((R, S), dtype=dtype or dense.dtype, device=dense.device)
    if n == 1 and valid_bits is None:
        raise ValueError("n = 1 needs valid_bits (see valid_bitmask)")
    if not uses_triton(dense):
        return _compress_torch(dense, indices, K, n, m, valid_bits, out)
    dense, indices = dense.contiguous(), indices.contiguous()
    if R and S:
        vb = valid_bits if valid_bits is not None else _dummy(dense.device)
        grid = (triton.cdiv(R, _CONV_R), triton.cdiv(K, _CONV_K))
        _compress_kernel[grid](dense, indices, vb, out, R, K, dense.stride(0), indices.stride(0), vb.stride(0),
                               out.stride(0), N_KEEP=n, M=m, BITS=index_bits(m), PER_WORD=indices_per_word(m),
                               HAS_VALID=valid_bits is not None, BLOCK_R=_CONV_R, BLOCK_K=_CONV_K)
    return out


def _valid_from_bits(valid_bits, S):
    shifts = torch.arange(32, device=valid_bits.device, dtype=torch.int32)
    return ((valid_bits[:, :, None] >> shifts) & 1).reshape(valid_bits.shape[0], -1)[:, :S].bool()


def _compress_torch(dense, indices, K, n, m, valid_bits, out):
    """CPU reference of the compress kernel (plain torch)."""
    from ..sparse import _valid_slots, unpack_indices

    R = dense.shape[0]
    S = out.shape[1]
    idx = unpack_indices(indices, m, S)
    cols = idx + (torch.arange(S, device=idx.device) // n * m)[None, :]
    G = -(-K // m)
    padded = torch.zeros((R, G * m), dtype=dense.dtype, device=dense.device)
    padded[:, :K] = dense
    vals = torch.gather(padded, 1, cols)
    valid = _valid_from_bits(valid_bits, S) if valid_bits is not None else _valid_slots(idx, n)
    out.copy_(torch.where(valid, vals, torch.zeros((), dtype=vals.dtype, device=vals.device)))
    return out


def nm_sddmm(dy: torch.Tensor, x: torch.Tensor, indices: torch.Tensor, K: int, n: int, m: int,
             valid_bits=None, dtype=None) -> torch.Tensor:
    """``(dy.T @ x)`` at the kept slots of the layout ``indices``: the gradient of the compressed values.

    Parameters
    ----------
    dy : torch.Tensor, shape (T, R)
        Output gradient.
    x : torch.Tensor, shape (T, K)
        Layer input.
    indices : torch.Tensor of int32, shape (R, words)
        Index layout of the weight (``CompressedNM.indices``).
    K, n, m : int
    valid_bits : torch.Tensor, optional
        :func:`valid_bitmask` (needed for ``n = 1``).
    dtype : torch.dtype, optional
        Of the result (default ``dy.dtype``).

    Returns
    -------
    torch.Tensor, shape (R, ceil(K/m) * n)
        Accumulated in fp32 (one dense tensor-core GEMM per tile, the gather in the
        epilogue); padding slots are exactly 0, so they stay 0 under SGD/Adam.
    """
    T, R = dy.shape
    if x.dim() != 2 or x.shape[0] != T or x.shape[1] != K:
        raise ValueError(f"x must have shape ({T}, {K}), got {tuple(x.shape)}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy and x dtypes differ: {dy.dtype} vs {x.dtype}")
    S = _check_layout(indices, K, n, m, rows=R)
    if n == 1 and valid_bits is None:
        raise ValueError("n = 1 needs valid_bits (see valid_bitmask)")
    dtype = dtype or dy.dtype
    if not uses_triton(dy):
        gw = (dy.float().t() @ x.float())
        return _compress_torch(gw, indices, K, n, m, valid_bits, torch.empty((R, S), dtype=dtype, device=dy.device))
    out = torch.empty((R, S), dtype=dtype, device=dy.device)
    if R == 0 or S == 0:
        return out
    indices = indices.contiguous()
    vb = valid_bits if valid_bits is not None else _dummy(dy.device)
    fp32_ieee = dy.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    grid = lambda META: (triton.cdiv(R, META["BLOCK_R"]), triton.cdiv(K, META["BLOCK_K"]))  # noqa: E731
    _sddmm_kernel[grid](dy, x, indices, vb, out, T, R, K, _t_bucket(T),
                        dy.stride(0), dy.stride(1), x.stride(0), x.stride(1), indices.stride(0), vb.stride(0),
                        out.stride(0), N_KEEP=n, M=m, BITS=index_bits(m), PER_WORD=indices_per_word(m),
                        HAS_VALID=valid_bits is not None, UPCAST=INTERPRET,
                        INPUT_PRECISION="ieee" if fp32_ieee else "tf32")
    return out
