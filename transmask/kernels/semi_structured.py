"""PyTorch's hardware 2:4 path (sparse tensor cores) for both products of a transposable 2:4 weight.

``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt, or CUTLASS when torch lacks it) stores
a 2:4 matrix in NVIDIA's own layout and multiplies it on the sparse tensor cores, which do
twice the MACs per cycle of the dense ones. It needs ``W`` to be 2:4 along the reduction
dimension of the product: the forward ``X @ W.T`` reduces along ``in_features``, the input
gradient ``dY @ W`` along ``out_features``, so the backward needs ``W.T`` to be 2:4 too --
which is exactly what a *transposable* 2:4 mask gives. This module builds both forms from
the dense masked weight:

* ``fused=True``: ``prune_dense_static_sort`` of the backend class (one kernel,
  ``torch._sparse_semi_structured_tile``, builds ``W`` and ``W.T`` compressed together). It
  prunes each 4x4 tile greedily by magnitude keeping <= 2 per row and column; on a matrix
  that already is transposable 2:4 every nonzero is picked before any zero (a nonzero can
  only be blocked by two larger entries of its row or column, i.e. by the row's or
  column's own two kept entries), so the result equals the input;
* ``fused=False``: two ``to_sparse_semi_structured`` calls, on ``W`` and on ``W.T``.

CUDA only (fp16/bf16; dimensions multiples of 64 for CUTLASS, 16 for cuSPARSELt).
``bench/gpu_check.py`` times both builds and both products against cuBLAS and checks every
output against the dense product.
"""
from __future__ import annotations

import torch

__all__ = ["hw_supported", "SemiStructuredPair"]


def _backend_class():
    from torch.sparse import SparseSemiStructuredTensor, SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    if SparseSemiStructuredTensor._FORCE_CUTLASS:
        return SparseSemiStructuredTensorCUTLASS
    try:
        ok = torch.backends.cusparselt.is_available()
    except Exception:  # pragma: no cover - very old torch
        ok = False
    return SparseSemiStructuredTensorCUSPARSELT if ok else SparseSemiStructuredTensorCUTLASS


def hw_supported(shape, dtype, n: int, m: int, device) -> bool:
    """Whether the hardware 2:4 path can take a weight of this shape, dtype and format on this device."""
    if (n, m) != (2, 4) or dtype not in (torch.float16, torch.bfloat16):
        return False
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    if torch.cuda.get_device_capability(dev) < (8, 0):
        return False
    try:
        cls = _backend_class()
        c = cls._DTYPE_SHAPE_CONSTRAINTS[dtype]
    except Exception:
        return False
    R, K = shape
    # both W (R x K) and W.T (K x R) must satisfy the row/column constraints
    need = max(c.sparse_min_rows, c.sparse_min_cols)
    return R >= need and K >= need and R % need == 0 and K % need == 0


class SemiStructuredPair:
    """``W`` and ``W.T`` on the sparse tensor cores, built from a dense transposable-2:4 weight.

    Parameters
    ----------
    dense : torch.Tensor, shape (R, K), CUDA fp16/bf16
        ``W * mask`` with a transposable 2:4 mask.
    fused : bool
        One fused build of both forms (``prune_dense_static_sort``) or two
        ``to_sparse_semi_structured`` calls (see the module notes).

    Attributes
    ----------
    forward : SparseSemiStructuredTensor
        ``W`` (``matmul(x) = x @ W.T``).
    backward : SparseSemiStructuredTensor or None
        ``W.T`` when built separately (``fused=False``); with ``fused=True`` the transposed
        form lives inside ``forward`` (``packed_t``).
    """

    def __init__(self, dense: torch.Tensor, fused: bool = True):
        dense = dense.detach().contiguous()
        self.shape = tuple(dense.shape)
        self.fused = bool(fused)
        if fused:
            self.forward = _backend_class().prune_dense_static_sort(dense)
            self.backward = None
        else:
            from torch.sparse import to_sparse_semi_structured

            self.forward = to_sparse_semi_structured(dense)
            self.backward = to_sparse_semi_structured(dense.t().contiguous())

    @property
    def backend(self) -> str:
        return type(self.forward).__name__

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T`` for ``x`` of shape (T, K)."""
        return torch.nn.functional.linear(x, self.forward)

    def matmul_t(self, dy: torch.Tensor) -> torch.Tensor:
        """``dy @ W`` for ``dy`` of shape (T, R)."""
        if self.backward is not None:
            return torch.nn.functional.linear(dy, self.backward)
        return torch.mm(dy, self.forward)
