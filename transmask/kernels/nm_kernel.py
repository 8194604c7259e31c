"""Triton kernel: ``Y = X @ A.T`` with ``A`` stored N:M-compressed along its columns.

``A`` (shape ``(R, K)``) is given as the ``values`` / ``indices`` pair of
:class:`transmask.sparse.CompressedNM` (layout documented there): ``n`` value
slots per group of ``m`` columns and ``ceil(log2 m)``-bit in-group positions
packed into int32 words. The same kernel serves both products of a Linear layer
with a transposable mask:

* forward  ``Y  = X  @ W.T``  reads ``W`` compressed along ``in_features``;
* backward ``dX = dY @ W``    reads ``W.T`` compressed along ``out_features``.

How it works, and why
---------------------
Triton (3.x) exposes no sparse tensor-core MMA, so each program loads a
``BLOCK_K`` slice of the compressed rows (``BLOCK_K * n / m`` values and their
indices), expands it **in registers** into a dense ``(BLOCK_R, BLOCK_K)`` tile and
feeds a dense ``tl.dot`` with fp32 accumulation. The saving is memory traffic:
with fp16 and 2:4, 1.125 bytes per weight instead of 2, which is what matters for
the memory-bound shapes (few tokens). On large compute-bound GEMMs the best case
is parity with cuBLAS; the hardware 2:4 path is PyTorch's
``to_sparse_semi_structured`` (see ``bench/matmul.py``).

Expansion is scatter-free: the tile is viewed as ``(BLOCK_R, BLOCK_K // m, m)``;
for every slot ``s`` (a compile-time loop over ``n``) the loaded index is compared
with ``arange(m)`` and ``tl.where`` writes the value where it matches. Slots are
visited from last to first so that a padding slot (value 0, repeating the last
kept position of a group that keeps fewer than ``n``) can never overwrite a kept
value. ``n`` need not be a power of two (3:8 works); ``m`` must be a power of two
(``tl.arange`` shapes) up to 32.

Supported: fp16, bf16 and fp32 inputs (values must have the input's dtype), fp32
accumulation, output in the input dtype; any ``T``, ``R``, ``K`` (edges masked);
``X`` with any strides. fp32 inputs use TF32 only when
``torch.backends.cuda.matmul.allow_tf32`` is set (torch's own rule for matmul).

Interpreter: with ``TRITON_INTERPRET=1`` set before this module is imported the
kernel runs on CPU tensors through Triton's interpreter; there bf16 arithmetic is
not faithful, so operands are cast to fp32 inside the kernel (``UPCAST``), and
autotuning is reduced to one (GPU-legal) configuration.

References
----------
.. [1] P. Tillet, H. T. Kung, D. Cox, "Triton: an intermediate language and
   compiler for tiled neural network computations", MAPL 2019.
.. [2] I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and
   Efficient Method to Find N:M Transposable Masks", NeurIPS 2021.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sparse import CompressedNM, index_bits, indices_per_word

__all__ = [
    "nm_matmul",
    "nm_linear",
    "INTERPRET",
    "SUPPORTED_M",
    "kernel_configs",
    "compile_kernel",
    "uses_triton",
]

#: True when Triton's interpreter was active when this module was imported.
INTERPRET: bool = bool(triton.knobs.runtime.interpret)

#: Group sizes the kernel accepts (powers of two: ``tl.arange`` needs them).
SUPPORTED_M = (2, 4, 8, 16, 32)

_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def _configs() -> list:
    if INTERPRET:
        # One configuration: no benchmarking in the interpreter, and GPU-legal block
        # sizes (tl.dot needs every dimension >= 16) so the interpreter exercises the
        # shapes the GPU runs. BLOCK_K >= 32 so every supported m divides it.
        return [triton.Config({"BLOCK_T": 16, "BLOCK_R": 32, "BLOCK_K": 32, "GROUP_T": 4}, num_warps=4, num_stages=1)]
    cfg = []
    # few tokens (memory bound): narrow row blocks so that there are enough programs
    # to keep every SM streaming weights, and long K slices to amortise the loop
    for br in (16, 32, 64):
        for bk in (128, 256):
            cfg.append(triton.Config({"BLOCK_T": 16, "BLOCK_R": br, "BLOCK_K": bk, "GROUP_T": 1}, num_warps=4, num_stages=3))
    cfg.append(triton.Config({"BLOCK_T": 32, "BLOCK_R": 64, "BLOCK_K": 128, "GROUP_T": 1}, num_warps=4, num_stages=3))
    cfg.append(triton.Config({"BLOCK_T": 64, "BLOCK_R": 64, "BLOCK_K": 64, "GROUP_T": 8}, num_warps=4, num_stages=4))
    # many tokens (compute bound): the usual tensor-core tiles, L2-friendly grouped order
    for bt, br, bk, w, s in (
        (128, 128, 64, 8, 3),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (128, 256, 64, 8, 3),
        (256, 128, 64, 8, 3),
        (128, 128, 32, 4, 4),
    ):
        cfg.append(triton.Config({"BLOCK_T": bt, "BLOCK_R": br, "BLOCK_K": bk, "GROUP_T": 8}, num_warps=w, num_stages=s))
    return cfg


def _prune(configs, named_args, **kwargs):
    # Tile the token dimension no wider than needed: a 128-row tile for 8 tokens
    # wastes 15/16 of every MMA. Keep at least one config whatever happens.
    t_key = named_args["T_KEY"]
    keep = [c for c in configs if c.kwargs["BLOCK_T"] <= max(16, t_key)]
    if t_key >= 256:
        keep = [c for c in keep if c.kwargs["BLOCK_T"] >= 64] or keep
    return keep or configs[:1]


def kernel_configs() -> list:
    """The autotuning configurations (one in interpreter mode)."""
    return list(_configs())


@triton.jit
def _nm_matmul_kernel_impl(
    x_ptr, v_ptr, i_ptr, y_ptr,
    T, R, K, T_KEY,
    stride_xt, stride_xk, stride_vr, stride_ir, stride_yt, stride_yr,
    N_KEEP: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, PER_WORD: tl.constexpr,
    UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_T: tl.constexpr,
):
    # T_KEY (a power-of-two bucket of T) is only read by the autotuner's key.
    BLOCK_G: tl.constexpr = BLOCK_K // M
    pid = tl.program_id(0)
    num_t = tl.cdiv(T, BLOCK_T)
    num_r = tl.cdiv(R, BLOCK_R)
    # grouped program order (Triton matmul tutorial): GROUP_T token blocks walk the
    # same weight blocks one after another, so a weight tile is read from L2, not HBM
    per_group = GROUP_T * num_r
    group = pid // per_group
    first_t = group * GROUP_T
    group_size = tl.minimum(num_t - first_t, GROUP_T)
    pid_t = first_t + (pid % per_group) % group_size
    pid_r = (pid % per_group) // group_size

    # int64 offsets: T * K and T * R exceed 2**31 for long sequences on wide layers
    offs_t = pid_t.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_r = pid_r.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_k = tl.arange(0, BLOCK_K)
    offs_g = tl.arange(0, BLOCK_G)
    pos = tl.arange(0, M)
    t_ok = offs_t < T
    r_ok = offs_r < R
    G = tl.cdiv(K, M)  # groups per compressed row (the last one may be cut by K)

    acc = tl.zeros((BLOCK_T, BLOCK_R), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        kk = kb * BLOCK_K + offs_k
        x = tl.load(
            x_ptr + offs_t[:, None] * stride_xt + kk[None, :] * stride_xk,
            mask=t_ok[:, None] & (kk < K)[None, :],
            other=0.0,
        )
        g = kb * BLOCK_G + offs_g
        gmask = r_ok[:, None] & (g < G)[None, :]
        # dense (BLOCK_R, BLOCK_G, M) tile; padding columns past K hold value 0
        w3 = tl.zeros((BLOCK_R, BLOCK_G, M), dtype=v_ptr.dtype.element_ty)
        if UPCAST:
            x = x.to(tl.float32)
            w3 = w3.to(tl.float32)
        for j in tl.static_range(N_KEEP):
            s = N_KEEP - 1 - j  # last slot first: kept values (first slots) win over padding
            slot = g * N_KEEP + s
            v = tl.load(v_ptr + offs_r[:, None] * stride_vr + slot[None, :], mask=gmask, other=0.0)
            word = tl.load(i_ptr + offs_r[:, None] * stride_ir + (slot // PER_WORD)[None, :], mask=gmask, other=0)
            # arithmetic shift of an int32 is fine: the field is masked afterwards
            idx = (word >> ((slot % PER_WORD) * BITS)[None, :]) & ((1 << BITS) - 1)
            if UPCAST:
                v = v.to(tl.float32)
            w3 = tl.where(idx[:, :, None] == pos[None, None, :], v[:, :, None], w3)
        w = tl.reshape(w3, (BLOCK_R, BLOCK_K))
        acc = tl.dot(x, tl.trans(w), acc, input_precision=INPUT_PRECISION, out_dtype=tl.float32)

    tl.store(
        y_ptr + offs_t[:, None] * stride_yt + offs_r[None, :] * stride_yr,
        acc.to(y_ptr.dtype.element_ty),
        mask=t_ok[:, None] & r_ok[None, :],
    )


_nm_matmul_kernel = triton.autotune(
    configs=_configs(),
    key=["T_KEY", "R", "K", "N_KEEP", "M"],  # the autotuner appends the tensors' dtypes
    prune_configs_by={"early_config_prune": _prune},
)(_nm_matmul_kernel_impl)


def _t_bucket(T: int) -> int:
    # tune once per power-of-two range of token counts, not once per distinct T
    return min(triton.next_power_of_2(max(int(T), 1)), 8192)


def uses_triton(x: torch.Tensor) -> bool:
    """Whether :func:`nm_matmul` runs the Triton kernel for ``x`` (CUDA tensor, or interpreter)."""
    return bool(x.is_cuda or INTERPRET)


def _check(x, values, indices, K, n, m):
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (tokens, K), got shape {tuple(x.shape)}")
    if x.shape[1] != K:
        raise ValueError(f"x has {x.shape[1]} columns but the compressed matrix has K={K}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"x must be float16, bfloat16 or float32, got {x.dtype}")
    if values.dtype != x.dtype:
        raise TypeError(f"values dtype {values.dtype} differs from x dtype {x.dtype}; cast one of them")
    if indices.dtype != torch.int32:
        raise TypeError(f"indices must be int32, got {indices.dtype}")
    G = -(-K // m)
    words = -(-(G * n) // indices_per_word(m))
    if values.dim() != 2 or values.shape[1] != G * n:
        raise ValueError(f"values must have shape (R, {G * n}) for K={K}, {n}:{m}; got {tuple(values.shape)}")
    if indices.dim() != 2 or tuple(indices.shape) != (values.shape[0], words):
        raise ValueError(f"indices must have shape ({values.shape[0]}, {words}); got {tuple(indices.shape)}")
    if x.device != values.device or x.device != indices.device:
        raise ValueError(f"x, values and indices must be on one device, got {x.device}, {values.device}, {indices.device}")


def _reference(x, values, indices, K, n, m):
    # CPU fallback without the interpreter: decompress and use torch's matmul (fp32
    # accumulation, like the kernel), so the module also works on machines with no GPU
    dense = CompressedNM(values, indices, (values.shape[0], K), n, m).decompress()
    return (x.float() @ dense.float().t()).to(x.dtype)


def nm_matmul(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, K: int, n: int, m: int) -> torch.Tensor:
    """``x @ A.T`` where ``A`` (``R x K``) is N:M-compressed as ``values``/``indices``.

    Parameters
    ----------
    x : torch.Tensor, shape (T, K)
        fp16, bf16 or fp32; any strides.
    values : torch.Tensor, shape (R, ceil(K/m) * n)
        Kept values (:class:`transmask.sparse.CompressedNM` layout), dtype of ``x``.
    indices : torch.Tensor of int32, shape (R, ceil(ceil(K/m) * n / (32 // ceil(log2 m))))
        Packed in-group positions.
    K : int
        Dense reduction length (columns of ``A``).
    n, m : int
        ``n`` slots per group of ``m``; ``m`` in ``SUPPORTED_M``.

    Returns
    -------
    torch.Tensor, shape (T, R), dtype of ``x``
        Accumulated in fp32. Runs the Triton kernel on CUDA tensors (or under the
        interpreter), a decompress-and-matmul torch fallback otherwise.
    """
    if m not in SUPPORTED_M:
        raise ValueError(f"the Triton kernel supports m in {SUPPORTED_M} (powers of two), got m={m}")
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= m, got n={n}, m={m}")
    _check(x, values, indices, K, n, m)
    T, R = x.shape[0], values.shape[0]
    if T == 0 or R == 0:
        return x.new_zeros((T, R))
    if not uses_triton(x):
        return _reference(x, values, indices, K, n, m)
    values = values.contiguous()
    indices = indices.contiguous()
    y = torch.empty((T, R), dtype=x.dtype, device=x.device)
    fp32_ieee = x.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    grid = lambda META: (triton.cdiv(T, META["BLOCK_T"]) * triton.cdiv(R, META["BLOCK_R"]),)  # noqa: E731
    _nm_matmul_kernel[grid](
        x, values, indices, y,
        T, R, K, _t_bucket(T),
        x.stride(0), x.stride(1), values.stride(0), indices.stride(0), y.stride(0), y.stride(1),
        N_KEEP=n, M=m, BITS=index_bits(m), PER_WORD=indices_per_word(m),
        UPCAST=INTERPRET, INPUT_PRECISION="ieee" if fp32_ieee else "tf32",
    )
    return y


def nm_linear(x: torch.Tensor, c: CompressedNM) -> torch.Tensor:
    """``x @ A.T`` for a :class:`~transmask.sparse.CompressedNM` ``c`` of ``A``; ``x`` may have leading batch dims."""
    R, K = c.shape
    lead = x.shape[:-1]
    y = nm_matmul(x.reshape(-1, x.shape[-1]), c.values, c.indices, K, c.n, c.m)
    return y.reshape(*lead, R)


def compile_kernel(target, dtype: str = "fp16", n: int = 2, m: int = 4, config=None, input_precision: str = "tf32"):
    """Compile the kernel ahead of time for a GPU ``target`` (no GPU needed).

    Parameters
    ----------
    target : triton.backends.compiler.GPUTarget
        E.g. ``GPUTarget("cuda", 80, 32)`` (A100) or ``GPUTarget("cuda", 90, 32)`` (H100).
    dtype : {"fp16", "bf16", "fp32"}
    n, m : int
    config : triton.Config, optional
        Block sizes, warps and stages; default the first autotuning config.
    input_precision : {"tf32", "ieee"}
        For fp32 ``tl.dot``.

    Returns
    -------
    triton.compiler.CompiledKernel
        ``.asm`` holds the ``ttir``/``ttgir``/``llir``/``ptx``/``cubin`` stages.

    Notes
    -----
    Used by the test suite to catch GPU compile errors on a CPU-only machine
    (the interpreter accepts code the GPU compiler rejects). Integer arguments
    are typed ``i32`` with the usual 16-divisibility hints on pointers and strides
    left out, i.e. the most general specialisation.
    """
    from triton.compiler import ASTSource

    if INTERPRET:
        raise RuntimeError("compile_kernel needs the real Triton JIT; import this module without TRITON_INTERPRET=1")
    if m not in SUPPORTED_M:
        raise ValueError(f"m must be one of {SUPPORTED_M}, got {m}")
    config = config or _configs()[0]
    fn = _nm_matmul_kernel_impl
    sig = {
        "x_ptr": f"*{dtype}", "v_ptr": f"*{dtype}", "i_ptr": "*i32", "y_ptr": f"*{dtype}",
        "T": "i32", "R": "i32", "K": "i32", "T_KEY": "i32",
        "stride_xt": "i32", "stride_xk": "i32", "stride_vr": "i32", "stride_ir": "i32",
        "stride_yt": "i32", "stride_yr": "i32",
    }
    constexprs = {
        "N_KEEP": n, "M": m, "BITS": index_bits(m), "PER_WORD": indices_per_word(m),
        "UPCAST": False, "INPUT_PRECISION": input_precision, **config.kwargs,
    }
    for name in constexprs:
        sig[name] = "constexpr"
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    return triton.compile(src, target=target, options={"num_warps": config.num_warps, "num_stages": config.num_stages})
