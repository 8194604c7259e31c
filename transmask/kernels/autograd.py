"""``torch.autograd.Function`` for a Linear layer whose weight is stored N:M-compressed (transposable mask).

The three products of a training step and what runs them (on CUDA; on CPU tensors a
decompress-and-matmul torch fallback gives the same numbers):

=====================  ==========================  =================================================
product                 ``T <= SMALL_T`` tokens      more tokens
=====================  ==========================  =================================================
``Y  = X @ W.T``        Triton kernel (split-K)      2:4 fp16/bf16: sparse tensor cores
``dX = dY @ W``         Triton kernel, same storage  (:mod:`~transmask.kernels.semi_structured`,
                                                     ``W`` and ``W.T``); other n:m: expand once +
                                                     cuBLAS
``dW`` at kept entries  fused SDDMM (:func:`~transmask.kernels.convert.nm_sddmm`): a dense GEMM per
                        tile with the gather in its epilogue, nothing dense written
=====================  ==========================  =================================================

Only the forward values are a parameter; the index words (int32, ``ceil(log2 m)`` bits per
kept value) are the only index data kept. The input gradient reads the same compressed
``W`` (the kernel reduces along the other dimension), so no backward copy of the values
exists and none is gathered per step; the weight gradient goes straight into the slots.
Padding slots (groups that keep fewer than ``n``) get an exact 0 gradient and stay 0 under
SGD, Adam and AdamW.

The policy constants below are the choices ``bench/gpu_check.py`` times against each other
(``LARGE_T_OTHER``: "dense" vs "triton"; ``DW_METHOD``: "fused" vs "dense", i.e. cuBLAS +
:func:`~transmask.kernels.convert.nm_compress_like`); they are module attributes so that a
benchmark can switch them.
"""
from __future__ import annotations

import torch

from .convert import nm_compress_like, nm_decompress, nm_sddmm
from .nm_kernel import SMALL_T, nm_matmul, nm_matmul_t, uses_triton
from .semi_structured import SemiStructuredPair, hw_supported

__all__ = ["TransposableNMLinearFunction", "transposable_nm_linear", "step_backends", "LARGE_T_2_4", "LARGE_T_OTHER",
           "DW_METHOD"]

#: Large-token products of a 2:4 fp16/bf16 weight: "hw" (sparse tensor cores) or as LARGE_T_OTHER.
LARGE_T_2_4 = "hw"
#: Large-token products of other formats: "dense" (expand once + cuBLAS) or "triton".
LARGE_T_OTHER = "dense"
#: Weight gradient: "fused" (Triton SDDMM with the gather in the epilogue) or "dense" (cuBLAS + compress).
DW_METHOD = "fused"
#: The backends the latest forward call chose (:func:`step_backends`' dict): a diagnostic for benchmarks.
last_backends: dict | None = None


def step_backends(T: int, dtype, n: int, m: int, hw_ok: bool, on_gpu: bool = True) -> dict:
    """What runs each product of a training step: ``{"fwd", "bwd", "dw"} -> backend``, plus conversions.

    Backends: ``"triton"`` (our kernels), ``"hw 2:4"`` (PyTorch's sparse tensor cores),
    ``"dense"`` (expand with :func:`~transmask.kernels.convert.nm_decompress`, then cuBLAS),
    ``"cpu"`` (the torch fallback). ``hw_ok``: :func:`~transmask.kernels.semi_structured.hw_supported`
    holds for the weight. ``"convert"`` lists the conversion kernels the step also launches.
    """
    if not on_gpu:
        return {"fwd": "cpu", "bwd": "cpu", "dw": "cpu", "convert": []}
    if T <= SMALL_T:
        kind = "triton"
    elif LARGE_T_2_4 == "hw" and hw_ok and (n, m) == (2, 4):
        kind = "hw 2:4"
    else:
        kind = LARGE_T_OTHER
    convert = ["decompress"] if kind in ("hw 2:4", "dense") else []
    dw = "triton" if DW_METHOD == "fused" else "dense"
    if dw == "dense":
        convert.append("compress")
    return {"fwd": kind, "bwd": kind, "dw": dw, "convert": convert}


def _hw_ok(x, R, K, n, m) -> bool:
    return x.is_cuda and hw_supported((R, K), x.dtype, n, m, x.device)


class _Plan:
    """How one call runs its products (decided once in forward, reused in backward)."""

    def __init__(self, x, R, K, n, m):
        on_gpu = uses_triton(x)
        self.backends = step_backends(x.shape[0], x.dtype, n, m, on_gpu and _hw_ok(x, R, K, n, m), on_gpu)
        self.kind = self.backends["fwd"]
        self.hw = None

    def method(self):
        return "triton" if self.kind == "triton" else "dense"


class TransposableNMLinearFunction(torch.autograd.Function):
    """``y = x @ W.T`` with ``W`` given by compressed ``values`` and int32 ``indices``.

    ``apply(x2d, values, indices, valid_bits, K, n, m, hw_cache)`` with ``x2d`` of shape
    ``(T, K)``, ``values`` of shape ``(R, ceil(K/m) * n)`` in ``x``'s dtype, ``valid_bits``
    from :func:`~transmask.kernels.convert.valid_bitmask` (None for ``n >= 2``) and
    ``hw_cache`` an optional dict in which the 2:4 hardware forms are kept while ``values``
    is unchanged (None: build them per call and free them after the backward).
    """

    @staticmethod
    def forward(ctx, x, values, indices, valid_bits, K, n, m, hw_cache):
        R = values.shape[0]
        plan = _Plan(x, R, K, n, m)
        global last_backends
        last_backends = plan.backends
        if plan.kind == "hw 2:4":
            plan.hw = _hw_pair(values, indices, K, n, m, hw_cache)
            y = plan.hw.matmul(x)
        else:
            y = nm_matmul(x, values, indices, K, n, m, method=plan.method())
        ctx.save_for_backward(x, values, indices, valid_bits)
        ctx.dims = (K, n, m)
        ctx.plan = plan
        return y

    @staticmethod
    def backward(ctx, dy):
        x, values, indices, valid_bits = ctx.saved_tensors
        K, n, m = ctx.dims
        plan = ctx.plan
        dx = dvalues = None
        dy = dy.contiguous()
        if ctx.needs_input_grad[0]:
            if plan.kind == "hw 2:4":
                dx = plan.hw.matmul_t(dy)
            else:
                dx = nm_matmul_t(dy, values, indices, K, n, m, method=plan.method())
        if ctx.needs_input_grad[1]:
            if plan.backends["dw"] != "dense":
                dvalues = nm_sddmm(dy, x, indices, K, n, m, valid_bits=valid_bits, dtype=values.dtype)
            else:
                dvalues = nm_compress_like(dy.t() @ x, indices, n, m, valid_bits=valid_bits, dtype=values.dtype)
        plan.hw = None  # free the hardware forms (unless the caller's cache keeps them)
        return dx, dvalues, None, None, None, None, None, None


def _hw_pair(values, indices, K, n, m, cache):
    """The 2:4 hardware forms of the current values (cached in ``cache`` while ``values`` is unchanged)."""
    key = (values.data_ptr(), values._version, values.dtype)
    if cache is not None and cache.get("key") == key:
        return cache["pair"]
    with torch.no_grad():
        pair = SemiStructuredPair(nm_decompress(values.detach(), indices, K, n, m), fused=True)
    if cache is not None:
        cache.clear()
        cache.update(key=key, pair=pair)
    return pair


def transposable_nm_linear(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, in_features: int,
                           n: int, m: int, bias: torch.Tensor | None = None, *, valid_bits=None, hw_cache=None):
    """Functional sparse Linear: ``x @ W.T + bias`` with ``W`` = ``values`` under the index layout ``indices``.

    Parameters
    ----------
    x : torch.Tensor, shape (..., in_features)
    values : torch.Tensor, shape (out_features, ceil(in_features/m) * n)
        The compressed weight (a parameter); cast to ``x.dtype`` if needed.
    indices : torch.Tensor of int32
        ``CompressedNM.indices`` of the weight, on ``x``'s device.
    in_features, n, m : int
    bias : torch.Tensor, shape (out_features,), optional
    valid_bits : torch.Tensor, optional
        :func:`~transmask.kernels.convert.valid_bitmask`, required for ``n = 1``.
    hw_cache : dict, optional
        Keeps the 2:4 hardware forms between calls while ``values`` is unchanged.
    """
    if n == 1 and valid_bits is None and values.requires_grad and torch.is_grad_enabled():
        raise ValueError("n = 1 needs valid_bits for training (see transmask.kernels.convert.valid_bitmask)")
    R = values.shape[0]
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y = TransposableNMLinearFunction.apply(x2, values.to(x.dtype), indices, valid_bits, int(in_features), int(n),
                                           int(m), hw_cache)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*lead, R)
