"""Triton kernel for the two products of an N:M-compressed matrix: ``X @ A.T`` and ``Y @ A``.

``A`` (shape ``(R, KW)``) is given as the ``values`` / ``indices`` pair of
:class:`transmask.sparse.CompressedNM` (layout documented there): ``n`` value slots per
group of ``m`` columns and ``ceil(log2 m)``-bit in-group positions packed into int32 words.
One kernel serves both products a Linear layer needs, reading the *same* compressed ``W``:

* forward  ``Y  = X  @ W.T`` (:func:`nm_matmul`): output tiles along ``R``, reduction along ``KW``;
* backward ``dX = dY @ W``   (:func:`nm_matmul_t`): output tiles along ``KW``, reduction along ``R``.

How it works, and why
---------------------
Triton (3.x) exposes no sparse tensor-core MMA, so each program expands a
``(BLOCK_R, BLOCK_K)`` tile of ``A`` in registers (:func:`transmask.kernels.tiles.load_dense_tile`)
and feeds a dense ``tl.dot`` with fp32 accumulation. The saving is memory traffic: fp16 2:4
is 1.125 bytes per weight instead of 2, which is what decides the time when there are few
tokens (decoding, small batches). The accumulator is ``(output features, tokens)``, i.e. the
kernel computes ``Y.T = A @ X.T``: the expanded tile is the MMA's *A* operand (Hopper's
``wgmma`` takes it from registers) and the token count, which may be 1, is the MMA's ``N``.

Few tokens (``T <= SMALL_T``): the weights are streamed once and the grid would be too small
(4096 output rows in 64-row tiles are 64 programs for 132 SMs), so the reduction is split
(split-K) over ``axis 1`` of the grid. Each program writes its fp32 partial tile to a
workspace and increments the tile's counter; the last program to arrive sums the partials
in a fixed order (deterministic) and writes the output, then resets the counter. One launch,
no atomics on data.

Many tokens: the same kernel with large tiles works (``method="triton"``), but the compiled
code says it cannot beat cuBLAS. For sm_90 and a 128 (tokens) x 128 x 64 tile the main loop is
0.26 warp instructions per expanded weight (``bench/kernel_sass.py --all-configs``), i.e.
8192 x 0.26 / 4 = ~535 issue cycles per tile for an SM that issues 4 warp instructions per
cycle, while the tensor cores need 128 x 128 x 64 / 2048 = 512 cycles for the tile's multiply
(H100, dense fp16). Triton 3.9 keeps one ``wgmma`` group in flight (``WARPGROUP.DEPBAR.LE gsb0,
0x1``), so at best expansion and multiply overlap and the tile takes as long as the dense one
does in cuBLAS, with no slack for the rest of the loop: expected 0.6-0.9x dense. Expanding the
matrix once (:func:`transmask.kernels.convert.nm_decompress`, ~3.1 bytes of traffic per weight)
and calling cuBLAS costs 2-8 % of a 4096-token GEMM instead, so :func:`nm_matmul` does that for
``T > SMALL_T`` (``method="auto"``); for 2:4 the autograd layer uses PyTorch's sparse tensor
cores (:mod:`transmask.kernels.semi_structured`). ``bench/gpu_check.py`` times all three so that
a GPU session can confirm or overturn this choice.

Supported: fp16, bf16 and fp32 inputs (values must have the input's dtype), fp32
accumulation, output in the input dtype; any ``T``, ``R``, ``KW`` (edges masked); inputs with
any strides. fp32 inputs use TF32 only when ``torch.backends.cuda.matmul.allow_tf32`` is set.

Interpreter: with ``TRITON_INTERPRET=1`` set before this module is imported the kernel runs
on CPU tensors through Triton's interpreter; there bf16 arithmetic is not faithful, so
operands are cast to fp32 inside the kernel (``UPCAST``), and autotuning is reduced to one
(GPU-legal) configuration per token range.

References
----------
.. [1] P. Tillet, H. T. Kung, D. Cox, "Triton: an intermediate language and compiler for
   tiled neural network computations", MAPL 2019.
.. [2] I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and Efficient Method
   to Find N:M Transposable Masks", NeurIPS 2021.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..sparse import CompressedNM, index_bits, indices_per_word
from .tiles import load_dense_tile

__all__ = [
    "nm_matmul",
    "nm_matmul_t",
    "nm_linear",
    "INTERPRET",
    "SUPPORTED_M",
    "SMALL_T",
    "kernel_configs",
    "uses_triton",
    "word_path",
]

#: True when Triton's interpreter was active when this module was imported.
INTERPRET: bool = bool(triton.knobs.runtime.interpret)

#: Group sizes the kernels accept (powers of two: ``tl.arange`` needs them).
SUPPORTED_M = (2, 4, 8, 16, 32)

#: Largest token count that takes the split-K streaming configurations (and, with
#: ``method="auto"``, the Triton kernel at all).
SMALL_T = 32

#: Most programs one output tile's reduction is split over.
SPLIT_MAX = 8

#: SM count assumed when no GPU is visible (H100/H200 SXM): used by the compile checks.
DEFAULT_SMS = 132

_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def word_path(dtype, n: int, m: int) -> bool:
    """Whether the fast word-at-a-time expansion applies (16-bit values, ``m`` in {2, 4}, ``n`` divides ``32 // bits``)."""
    return dtype in (torch.float16, torch.bfloat16, "fp16", "bf16") and m in (2, 4) and indices_per_word(m) % n == 0


def _cfg(bt, br, bk, warps, stages, group=1):
    return triton.Config({"BLOCK_T": bt, "BLOCK_R": br, "BLOCK_K": bk, "GROUP_T": group}, num_warps=warps, num_stages=stages)


def _config_groups() -> dict:
    """Autotuning candidates by (expansion path, token range). Every one compiles without spills (sm_80, sm_90)."""
    if INTERPRET:
        # no benchmarking in the interpreter; GPU-legal block sizes (tl.dot needs every
        # dimension >= 16) so that it runs the shapes the GPU runs. BLOCK_K = 64 is a
        # multiple of every m * P / n the word path needs (32 for 2:4, 64 for 1:4).
        one = {16: [_cfg(16, 32, 64, 4, 1)], 32: [_cfg(32, 32, 64, 4, 1)]}
        return {"word": one, "word_unaligned": one, "slot": one, "large": []}
    return {
        # word path, few tokens (memory bound, split-K): <= 0.3 warp instructions per weight
        # in the main loop on sm_80 and sm_90 (tests/kernels_compile_cases.py)
        "word": {bt: [_cfg(bt, 64, 128, 4, 4), _cfg(bt, 64, 256, 4, 3), _cfg(bt, 128, 128, 8, 3)] for bt in (16, 32)},
        # word path, value rows not 16-element aligned (K not a multiple of 8 * m / n): no 128-bit
        # loads and no cp.async; short K blocks keep the register-pipelined loads from spilling
        "word_unaligned": {bt: [_cfg(bt, 64, 64, 4, 3)] for bt in (16, 32)},
        # slot path (fp32, m >= 8, n not dividing 32 // bits): correct, not tuned (1-5 warp
        # instructions per weight); small tiles over 8 warps keep m = 32 from spilling
        "slot": {bt: [_cfg(bt, 32, 64, 8, 3)] for bt in (16, 32)},
        # word path, many tokens (only with method="triton"): tensor-core tiles, grouped order
        "large": [_cfg(64, 128, 64, 4, 4, 8), _cfg(128, 128, 64, 8, 3, 8), _cfg(128, 64, 64, 4, 4, 8)],
    }


_GROUPS = _config_groups()


def _configs() -> list:
    out = []
    for name in ("word", "word_unaligned", "slot"):
        for bt in (16, 32):
            out += [c for c in _GROUPS[name][bt] if c not in out]
    return out + _GROUPS["large"]


def _prune(configs, named_args, **kwargs):
    """The candidates for one launch: expansion path, value-row alignment, token range.

    Token tiles no wider than needed: 16 for T <= 16, 32 for T <= 32; above, the large tiles
    (word path, aligned) or 32-token tiles walking the tokens through the grid.
    """
    t_key = named_args["T_KEY"]
    aligned = named_args.get("stride_vr", 16) % 16 == 0
    group = "slot" if not kwargs.get("WORD_PATH", True) else ("word" if aligned else "word_unaligned")
    if t_key > SMALL_T and group == "word" and _GROUPS["large"]:
        keep = _GROUPS["large"]
    else:
        keep = _GROUPS[group][16 if t_key <= 16 else 32]
    return [c for c in configs if c in keep] or configs[:1]


def kernel_configs() -> list:
    """The autotuning configurations (two in interpreter mode)."""
    return list(CONFIGS)


@triton.jit
def _nm_mm_kernel_impl(
    a_ptr, v_ptr, i_ptr, y_ptr, ws_ptr, lock_ptr,
    T, R, KW, T_KEY,
    stride_at, stride_ak, stride_vr, stride_ir, stride_yt, stride_yc,
    N_KEEP: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr, PER_WORD: tl.constexpr,
    WORD_PATH: tl.constexpr, TRANS_W: tl.constexpr, UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    EVEN_R: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_T: tl.constexpr,
):
    # TRANS_W False: y (T, R)  = a (T, KW) @ W.T, output tiles along R, reduce along KW.
    # TRANS_W True:  y (T, KW) = a (T, R)  @ W,   output tiles along KW, reduce along R.
    # T_KEY (a power-of-two bucket of T) is only read by the autotuner's key.
    if TRANS_W:
        BLOCK_O: tl.constexpr = BLOCK_K
        n_out = tl.cdiv(KW, BLOCK_K)
        n_red = tl.cdiv(R, BLOCK_R)
        OUT = KW
    else:
        BLOCK_O: tl.constexpr = BLOCK_R
        n_out = tl.cdiv(R, BLOCK_R)
        n_red = tl.cdiv(KW, BLOCK_K)
        OUT = R
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n_split = tl.num_programs(1)
    num_t = tl.cdiv(T, BLOCK_T)
    # grouped order (Triton's matmul tutorial): GROUP_T token tiles walk the same weight
    # tiles one after another, so a weight tile comes from L2, not HBM
    per_group = GROUP_T * n_out
    group = pid // per_group
    first_t = group * GROUP_T
    group_size = tl.minimum(num_t - first_t, GROUP_T)
    pid_t = first_t + (pid % per_group) % group_size
    pid_o = (pid % per_group) // group_size
    # this program's share of the reduction blocks
    per_split = tl.cdiv(n_red, n_split)
    b0 = split * per_split
    b1 = tl.minimum(b0 + per_split, n_red)

    # int64 offsets: T * KW and T * R exceed 2**31 for long sequences on wide layers
    offs_t = pid_t.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = offs_t < T
    acc = tl.zeros((BLOCK_O, BLOCK_T), dtype=tl.float32)
    for b in range(b0, b1):
        if TRANS_W:
            r0 = b * BLOCK_R
            k0 = pid_o * BLOCK_K
            offs_a = r0 + tl.arange(0, BLOCK_R)
            a_ok = offs_a < R
        else:
            r0 = pid_o * BLOCK_R
            k0 = b * BLOCK_K
            offs_a = k0 + tl.arange(0, BLOCK_K)
            a_ok = offs_a < KW
        w = load_dense_tile(v_ptr, i_ptr, r0, k0, R, KW, stride_vr, stride_ir, N_KEEP, M, BITS, PER_WORD,
                            WORD_PATH, EVEN_R, EVEN_K, BLOCK_R, BLOCK_K)
        a_ptrs = a_ptr + offs_t[:, None] * stride_at + offs_a[None, :] * stride_ak
        if (TRANS_W and EVEN_R) or (not TRANS_W and EVEN_K):
            a = tl.load(a_ptrs, mask=t_ok[:, None], other=0.0)
        else:
            a = tl.load(a_ptrs, mask=t_ok[:, None] & a_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        if TRANS_W:
            acc = tl.dot(tl.trans(w), tl.trans(a), acc, input_precision=INPUT_PRECISION, out_dtype=tl.float32)
        else:
            acc = tl.dot(w, tl.trans(a), acc, input_precision=INPUT_PRECISION, out_dtype=tl.float32)

    offs_o = pid_o.to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    y_ptrs = y_ptr + offs_t[None, :] * stride_yt + offs_o[:, None] * stride_yc
    y_mask = (offs_o < OUT)[:, None] & t_ok[None, :]
    if n_split == 1:
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=y_mask)
    else:
        # split-K: partial tiles to the workspace, the last program of the tile reduces them
        TILE: tl.constexpr = BLOCK_O * BLOCK_T
        tile_offs = tl.arange(0, BLOCK_O)[:, None] * BLOCK_T + tl.arange(0, BLOCK_T)[None, :]
        ws_tile = ws_ptr + pid.to(tl.int64) * n_split * TILE
        tl.store(ws_tile + split * TILE + tile_offs, acc)
        tl.debug_barrier()  # every thread's partial is written before the release below
        arrived = tl.atomic_add(lock_ptr + pid, 1, sem="acq_rel", scope="gpu")
        if arrived == n_split - 1:
            total = tl.zeros((BLOCK_O, BLOCK_T), dtype=tl.float32)
            for s in range(0, n_split):  # fixed order: the result does not depend on arrival order
                total += tl.load(ws_tile + s * TILE + tile_offs, cache_modifier=".cg")
            tl.store(y_ptrs, total.to(y_ptr.dtype.element_ty), mask=y_mask)
            tl.atomic_xchg(lock_ptr + pid, 0, sem="relaxed", scope="gpu")  # ready for the next launch


def _even(args):
    return {
        "EVEN_R": args["R"] % args["BLOCK_R"] == 0,
        "EVEN_K": args["KW"] % args["BLOCK_K"] == 0,
    }


#: The autotuning configurations (one list, shared by the autotuner and the launch planning).
CONFIGS = _configs()

_nm_mm_kernel = triton.autotune(
    configs=CONFIGS,
    key=["T_KEY", "R", "KW", "stride_vr", "N_KEEP", "M", "TRANS_W"],  # the autotuner appends the dtypes
    prune_configs_by={"early_config_prune": _prune},
)(triton.heuristics({"EVEN_R": lambda a: _even(a)["EVEN_R"], "EVEN_K": lambda a: _even(a)["EVEN_K"]})(_nm_mm_kernel_impl))


def _t_bucket(T: int) -> int:
    # tune once per power-of-two range of token counts, not once per distinct T
    return min(triton.next_power_of_2(max(int(T), 1)), 8192)


def _sm_count(device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_SMS


def split_count(cfg_kwargs: dict, T: int, R: int, KW: int, trans_w: bool, sms: int = DEFAULT_SMS) -> int:
    """How many programs share one output tile's reduction (split-K) for a configuration.

    Aim for about two programs per SM, keep at least 4 reduction blocks per program, never
    more than ``SPLIT_MAX``; 1 (no split) for the large-token configurations.
    """
    bt, br, bk = cfg_kwargs["BLOCK_T"], cfg_kwargs["BLOCK_R"], cfg_kwargs["BLOCK_K"]
    if bt > SMALL_T:
        return 1
    n_out = triton.cdiv(KW, bk) if trans_w else triton.cdiv(R, br)
    n_red = triton.cdiv(R, br) if trans_w else triton.cdiv(KW, bk)
    tiles = n_out * triton.cdiv(T, bt)
    want = max(1, (2 * sms) // max(tiles, 1))
    return max(1, min(want, SPLIT_MAX, n_red // 4))


_LOCKS: dict = {}


def _locks(device, count: int) -> torch.Tensor:
    """Zeroed int32 counters for the split-K reduction, kept per (device, stream) and reset by the kernel."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream)
    buf = _LOCKS.get(key)
    if buf is None or buf.numel() < count:
        buf = torch.zeros(max(count, 1024, 2 * (0 if buf is None else buf.numel())), dtype=torch.int32, device=device)
        _LOCKS[key] = buf
    return buf


def uses_triton(x: torch.Tensor) -> bool:
    """Whether the Triton kernels run for tensors like ``x`` (CUDA tensor, or interpreter)."""
    return bool(x.is_cuda or INTERPRET)


def _check(x, values, indices, K, n, m, red, what):
    if m not in SUPPORTED_M:
        raise ValueError(f"the Triton kernels support m in {SUPPORTED_M} (powers of two), got m={m}")
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= m, got n={n}, m={m}")
    if x.dim() != 2:
        raise ValueError(f"{what} must be 2-D (tokens, {red}), got shape {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{what} must be float16, bfloat16 or float32, got {x.dtype}")
    if values.dtype != x.dtype:
        raise TypeError(f"values dtype {values.dtype} differs from {what} dtype {x.dtype}; cast one of them")
    if indices.dtype != torch.int32:
        raise TypeError(f"indices must be int32, got {indices.dtype}")
    G = -(-K // m)
    words = -(-(G * n) // indices_per_word(m))
    if values.dim() != 2 or values.shape[1] != G * n:
        raise ValueError(f"values must have shape (R, {G * n}) for K={K}, {n}:{m}; got {tuple(values.shape)}")
    if indices.dim() != 2 or tuple(indices.shape) != (values.shape[0], words):
        raise ValueError(f"indices must have shape ({values.shape[0]}, {words}); got {tuple(indices.shape)}")
    if x.device != values.device or x.device != indices.device:
        raise ValueError(f"{what}, values and indices must be on one device, got {x.device}, {values.device}, {indices.device}")
    width = K if red == "K" else values.shape[0]
    if x.shape[1] != width:
        raise ValueError(f"{what} has {x.shape[1]} columns but the compressed matrix has {red}={width}")


@dataclass
class Launch:
    """One launch of the autotuned kernel, planned on the host (shared by the runtime and the compile checks)."""

    grid: object  # callable(meta) -> (programs, split)
    dims: tuple  # (T, R, KW, T_KEY)
    constexprs: dict
    configs: list  # the autotuner's candidates after pruning
    workspace_floats: int  # fp32 partial tiles for split-K (largest over the candidates)
    tiles: int  # output tiles (largest over the candidates): split-K counters needed


def _launch_args(a, values, indices, K, n, m, trans_w, split=None, sms=None) -> Launch:
    """Plan a launch: grid, specialisation constants, candidate configs and workspace sizes.

    Used by :func:`_run` and by :func:`transmask.kernels.compiled.runtime_specialisations`,
    so that the compile checks compile exactly what runs.
    """
    T = a.shape[0]
    R = values.shape[0]
    sms = sms or _sm_count(a.device)
    fp32_ieee = a.dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32
    t_key = _t_bucket(T)

    def n_split(meta):
        return int(split) if split is not None else split_count(meta, T, R, K, trans_w, sms)

    def n_tiles(meta):
        out = triton.cdiv(K, meta["BLOCK_K"]) if trans_w else triton.cdiv(R, meta["BLOCK_R"])
        return out * triton.cdiv(T, meta["BLOCK_T"])

    def grid(meta):
        return (n_tiles(meta), n_split(meta))

    wp = word_path(a.dtype, n, m)
    configs = _prune(CONFIGS, {"T_KEY": t_key, "stride_vr": values.stride(0)}, WORD_PATH=wp)
    ws_floats, tiles = 0, 1
    for c in configs:
        kw = c.kwargs
        tiles = max(tiles, n_tiles(kw))
        if n_split(kw) > 1:
            tile = (kw["BLOCK_K"] if trans_w else kw["BLOCK_R"]) * kw["BLOCK_T"]
            ws_floats = max(ws_floats, n_tiles(kw) * n_split(kw) * tile)
    constexprs = dict(
        N_KEEP=n, M=m, BITS=index_bits(m), PER_WORD=indices_per_word(m),
        WORD_PATH=wp, TRANS_W=bool(trans_w),
        UPCAST=INTERPRET, INPUT_PRECISION="ieee" if fp32_ieee else "tf32",
    )
    return Launch(grid, (T, R, K, t_key), constexprs, configs, ws_floats, tiles)


_PLANS: dict = {}


def _run(a, values, indices, K, n, m, trans_w, split=None):
    T = a.shape[0]
    R = values.shape[0]
    out_width = K if trans_w else R
    y = torch.empty((T, out_width), dtype=a.dtype, device=a.device)
    if T == 0 or out_width == 0:
        return y
    if (K if not trans_w else R) == 0:
        return y.zero_()
    values = values.contiguous()
    indices = indices.contiguous()
    key = (T, R, K, n, m, trans_w, split, a.dtype, a.device, values.stride(0), torch.backends.cuda.matmul.allow_tf32)
    plan = _PLANS.get(key)
    if plan is None:  # planning costs tens of microseconds of Python; a decode step repeats the same shapes
        plan = _PLANS[key] = _launch_args(a, values, indices, K, n, m, trans_w, split)
        if len(_PLANS) > 4096:
            _PLANS.clear()
    ws = torch.empty(max(plan.workspace_floats, 1), dtype=torch.float32, device=a.device)
    locks = _locks(a.device, plan.tiles)
    _nm_mm_kernel[plan.grid](
        a, values, indices, y, ws, locks, *plan.dims,
        a.stride(0), a.stride(1), values.stride(0), indices.stride(0), y.stride(0), y.stride(1),
        **plan.constexprs,
    )
    return y


def _dense(values, indices, K, n, m):
    return CompressedNM(values, indices, (values.shape[0], K), n, m).decompress()


def _method(method: str, T: int, x) -> str:
    if method not in ("auto", "triton", "dense"):
        raise ValueError(f"method must be 'auto', 'triton' or 'dense', got {method!r}")
    if not uses_triton(x):
        return "dense"
    if method == "auto":
        return "triton" if T <= SMALL_T else "dense"
    return method


def nm_matmul(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, K: int, n: int, m: int,
              method: str = "auto", split: int | None = None) -> torch.Tensor:
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
    method : {"auto", "triton", "dense"}
        ``"triton"``: the sparse kernel; ``"dense"``: expand ``A`` once
        (:func:`transmask.kernels.convert.nm_decompress`) and call ``torch.matmul`` (cuBLAS);
        ``"auto"``: the kernel for ``T <= SMALL_T`` tokens, dense above (see the module notes).
        On CPU tensors without the interpreter every method is the dense torch fallback.
    split : int, optional
        Force the split-K factor of the kernel (tests); default: a heuristic per configuration.

    Returns
    -------
    torch.Tensor, shape (T, R), dtype of ``x``
        Accumulated in fp32.
    """
    _check(x, values, indices, K, n, m, "K", "x")
    how = _method(method, x.shape[0], x)
    if how == "dense":
        return _dense_matmul(x, values, indices, K, n, m, transposed=False)
    return _run(x, values, indices, K, n, m, trans_w=False, split=split)


def nm_matmul_t(dy: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, K: int, n: int, m: int,
                method: str = "auto", split: int | None = None) -> torch.Tensor:
    """``dy @ A`` for the same compressed ``A`` (``R x K``) as :func:`nm_matmul` (the input gradient of a Linear).

    Parameters
    ----------
    dy : torch.Tensor, shape (T, R)
    values, indices, K, n, m, method, split
        As for :func:`nm_matmul`.

    Returns
    -------
    torch.Tensor, shape (T, K), dtype of ``dy``

    Notes
    -----
    The kernel expands the same ``(BLOCK_R, BLOCK_K)`` tiles of ``A`` as the forward product
    and reduces along ``R`` instead of ``K``, so it needs no second compressed copy of ``A``
    and no gather of backward values: an optimizer step on ``values`` is all it takes.
    """
    _check(dy, values, indices, K, n, m, "R", "dy")
    how = _method(method, dy.shape[0], dy)
    if how == "dense":
        return _dense_matmul(dy, values, indices, K, n, m, transposed=True)
    return _run(dy, values, indices, K, n, m, trans_w=True, split=split)


def _dense_matmul(x, values, indices, K, n, m, transposed):
    if uses_triton(x):
        from .convert import nm_decompress

        dense = nm_decompress(values, indices, K, n, m)
    else:
        dense = _dense(values, indices, K, n, m)
    if x.is_cuda:
        return x @ dense if transposed else x @ dense.t()
    # CPU fallback: fp32 accumulation like the kernel
    d = dense.float()
    return (x.float() @ (d if transposed else d.t())).to(x.dtype)


def nm_linear(x: torch.Tensor, c: CompressedNM, method: str = "auto") -> torch.Tensor:
    """``x @ A.T`` for a :class:`~transmask.sparse.CompressedNM` ``c`` of ``A``; ``x`` may have leading batch dims."""
    R, K = c.shape
    lead = x.shape[:-1]
    y = nm_matmul(x.reshape(-1, x.shape[-1]), c.values, c.indices, K, c.n, c.m, method=method)
    return y.reshape(*lead, R)
