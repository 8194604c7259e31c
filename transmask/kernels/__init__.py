"""Triton kernels for N:M sparse matmul, forward and backward, from one transposable mask.

Needs the optional dependencies torch and triton (``pip install 'transmask[triton]'``).
On CUDA tensors the Triton kernels run; on CPU tensors a decompress-and-matmul torch
fallback gives the same results, and with ``TRITON_INTERPRET=1`` set before this package is
first imported the kernels run on CPU through Triton's interpreter (slow; for tests).

What runs where (details in :mod:`transmask.kernels.autograd`): up to ``SMALL_T`` tokens
the Triton kernel streams the compressed weight (split-K, 1.125 bytes per weight for fp16
2:4 instead of 2); above, 2:4 fp16/bf16 weights go to PyTorch's sparse tensor cores
(:mod:`~transmask.kernels.semi_structured`, for ``W`` and ``W.T``) and other formats are
expanded once for cuBLAS; the weight gradient is computed at the kept entries only.

Public API
----------
nm_matmul(x, values, indices, K, n, m)
    ``x @ A.T`` with ``A`` compressed (:class:`transmask.sparse.CompressedNM` arrays).
nm_matmul_t(dy, values, indices, K, n, m)
    ``dy @ A`` from the same compressed ``A`` (the input gradient).
nm_linear(x, compressed)
    ``x @ A.T`` for a ``CompressedNM`` (leading batch dims allowed).
nm_decompress, nm_compress_like, nm_sddmm, valid_bitmask
    Conversions and the weight gradient at the kept entries (:mod:`~transmask.kernels.convert`).
transposable_nm_linear(x, values, indices, in_features, n, m, bias=None)
    Differentiable sparse Linear.
TransposableNMLinearFunction
    The ``torch.autograd.Function`` behind it.
SparseLinear
    ``nn.Module`` (``SparseLinear.from_linear(linear, n, m)``).
compiled
    Submodule (imported on use): the runtime's kernel specialisations compiled for a GPU
    target without a GPU, with register, spill and SASS instruction counts.
"""
from __future__ import annotations

from .._optional import require

require("torch", "transmask.kernels")
require("triton", "transmask.kernels")

from .autograd import TransposableNMLinearFunction, step_backends, transposable_nm_linear  # noqa: E402
from .convert import nm_compress_like, nm_decompress, nm_sddmm, valid_bitmask  # noqa: E402
from .modules import SparseLinear  # noqa: E402
from .nm_kernel import (  # noqa: E402
    INTERPRET,
    SMALL_T,
    SUPPORTED_M,
    kernel_configs,
    nm_linear,
    nm_matmul,
    nm_matmul_t,
    uses_triton,
    word_path,
)

__all__ = [
    "nm_matmul",
    "nm_matmul_t",
    "nm_linear",
    "nm_decompress",
    "nm_compress_like",
    "nm_sddmm",
    "valid_bitmask",
    "transposable_nm_linear",
    "TransposableNMLinearFunction",
    "SparseLinear",
    "step_backends",
    "kernel_configs",
    "uses_triton",
    "word_path",
    "INTERPRET",
    "SMALL_T",
    "SUPPORTED_M",
]
