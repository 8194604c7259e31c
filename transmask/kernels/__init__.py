"""Triton kernels for N:M sparse matmul, forward and backward, from one transposable mask.

Needs the optional dependencies torch and triton (``pip install 'transmask[triton]'``).
On CUDA tensors the Triton kernels run; on CPU tensors a decompress-and-matmul
torch fallback gives the same results, and with ``TRITON_INTERPRET=1`` set
before this package is first imported the kernels run on CPU through Triton's
interpreter (slow; for tests).

Public API
----------
nm_matmul(x, values, indices, K, n, m)
    ``x @ A.T`` with ``A`` compressed (:class:`transmask.sparse.CompressedNM` arrays).
nm_linear(x, compressed)
    The same for a ``CompressedNM`` (leading batch dims allowed).
transposable_nm_linear(x, values, layout, bias=None)
    Differentiable: forward and input-gradient on the sparse kernel.
TransposableNMLinearFunction
    The ``torch.autograd.Function`` behind it.
SparseLinear
    ``nn.Module`` (``SparseLinear.from_linear(linear, n, m)``).
compile_kernel(target, dtype, n, m, config)
    Ahead-of-time compile for a GPU target without a GPU (used by the tests).
"""
from __future__ import annotations

from .._optional import require

require("torch", "transmask.kernels")
require("triton", "transmask.kernels")

from .autograd import TransposableNMLinearFunction, transposable_nm_linear  # noqa: E402
from .modules import SparseLinear  # noqa: E402
from .nm_kernel import INTERPRET, SUPPORTED_M, compile_kernel, kernel_configs, nm_linear, nm_matmul, uses_triton  # noqa: E402

__all__ = [
    "nm_matmul",
    "nm_linear",
    "transposable_nm_linear",
    "TransposableNMLinearFunction",
    "SparseLinear",
    "compile_kernel",
    "kernel_configs",
    "uses_triton",
    "INTERPRET",
    "SUPPORTED_M",
]
