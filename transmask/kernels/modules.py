"""``SparseLinear``: an ``nn.Linear`` whose weight keeps a transposable N:M mask, on Triton kernels."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..sparse import CompressedNM, TransposableNM, compress_transposable
from .autograd import transposable_nm_linear
from .nm_kernel import SUPPORTED_M

__all__ = ["SparseLinear"]


class SparseLinear(nn.Module):
    """Linear layer ``y = x @ W.T + b`` with ``W`` stored compressed under a transposable N:M mask.

    The forward product and the input gradient both run the N:M Triton kernel
    (on CUDA; on CPU a decompress-and-matmul fallback gives the same numbers).
    Only the kept weights are a parameter (``values``, shape
    ``(out_features, ceil(in_features/m) * n)``); the index tensors are buffers,
    saved in the ``state_dict``.

    Parameters
    ----------
    in_features, out_features : int
    n, m : int
        Keep ``n`` of every ``m`` (``m`` a power of two up to 32).
    bias : bool
    mask : array_like of bool, shape (out_features, in_features), optional
        A transposable N:M mask. Default: :func:`transmask.optimal_mask` of the
        randomly initialised weight.
    device, dtype : optional
        As for ``nn.Linear``.
    weight : torch.Tensor, optional
        Dense initial weight (default: ``nn.Linear``'s initialisation); see :meth:`from_dense`.

    Examples
    --------
    >>> import torch, transmask.kernels as tk
    >>> lin = torch.nn.Linear(64, 32)
    >>> sp = tk.SparseLinear.from_linear(lin, 2, 4)          # doctest: +SKIP
    >>> y = sp(torch.randn(8, 64))                           # doctest: +SKIP
    """

    def __init__(self, in_features: int, out_features: int, n: int = 2, m: int = 4, bias: bool = True,
                 mask=None, device=None, dtype=None, weight: torch.Tensor | None = None):
        super().__init__()
        if m not in SUPPORTED_M:
            raise ValueError(f"SparseLinear supports m in {SUPPORTED_M}, got m={m}")
        self.in_features, self.out_features, self.n, self.m = int(in_features), int(out_features), int(n), int(m)
        if weight is None:
            weight = torch.empty((out_features, in_features), device=device, dtype=dtype or torch.get_default_dtype())
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's initialisation
        else:
            weight = weight.detach().to(device=device or weight.device, dtype=dtype or weight.dtype)
        if bias:
            bound = 1 / math.sqrt(in_features) if in_features > 0 else 0
            self.bias = nn.Parameter(torch.empty(out_features, device=weight.device, dtype=weight.dtype).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
        self.values = nn.Parameter(torch.empty(0, device=weight.device, dtype=weight.dtype))
        self.set_weight(weight, mask)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, n: int, m: int, mask=None, bias: torch.Tensor | None = None) -> "SparseLinear":
        """Build from a dense weight ``(out_features, in_features)`` and a transposable mask (default: optimal)."""
        out_f, in_f = weight.shape
        self = cls(in_f, out_f, n, m, bias=bias is not None, mask=mask, weight=weight)
        if bias is not None:
            with torch.no_grad():
                self.bias.copy_(bias)
        return self

    @classmethod
    def from_linear(cls, linear: nn.Linear, n: int, m: int, mask=None) -> "SparseLinear":
        """Sparse copy of an ``nn.Linear`` (mask default: :func:`transmask.optimal_mask` of ``|weight|``)."""
        return cls.from_dense(linear.weight.detach(), n, m, mask=mask,
                              bias=None if linear.bias is None else linear.bias.detach())

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor, mask=None) -> None:
        """Re-compress from a dense weight and a transposable mask (e.g. after recomputing the mask).

        ``mask=None`` computes the optimal transposable mask of ``|weight|``.
        """
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight must have shape {(self.out_features, self.in_features)}, got {tuple(weight.shape)}")
        if mask is None:
            import transmask

            mask = transmask.optimal_mask(weight.detach().abs().float().cpu().numpy(), self.n, self.m)
        layout = compress_transposable(weight.detach(), mask, self.n, self.m)
        self.values = nn.Parameter(layout.forward.values.clone(), requires_grad=self.values.requires_grad)
        for name, t in (
            ("fwd_indices", layout.forward.indices),
            ("bwd_indices", layout.backward.indices),
            ("backward_from_forward", layout.backward_from_forward),
            ("forward_columns", layout.forward_columns),
        ):
            self.register_buffer(name, t.clone())

    def layout(self) -> TransposableNM:
        """The index layout on the module's device (``forward.values`` is the live parameter)."""
        R, K, n, m = self.out_features, self.in_features, self.n, self.m
        fwd = CompressedNM(self.values, self.fwd_indices, (R, K), n, m)
        bwd = CompressedNM(None, self.bwd_indices, (K, R), n, m)
        return TransposableNM(fwd, bwd, self.backward_from_forward, self.forward_columns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return transposable_nm_linear(x, self.values, self.layout(), self.bias)

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """The dense ``(out_features, in_features)`` weight ``W * mask``."""
        return CompressedNM(self.values.detach(), self.fwd_indices, (self.out_features, self.in_features), self.n, self.m).decompress()

    @torch.no_grad()
    def mask(self) -> torch.Tensor:
        """The transposable mask, bool ``(out_features, in_features)``."""
        return CompressedNM(self.values.detach(), self.fwd_indices, (self.out_features, self.in_features), self.n, self.m).to_mask()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, n={self.n}, m={self.m}, bias={self.bias is not None}"
