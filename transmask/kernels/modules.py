"""``SparseLinear``: an ``nn.Linear`` whose weight keeps a transposable N:M mask, stored compressed."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..sparse import CompressedNM, compress_transposable
from .autograd import transposable_nm_linear
from .convert import valid_bitmask
from .nm_kernel import SUPPORTED_M

__all__ = ["SparseLinear"]


class SparseLinear(nn.Module):
    """Linear layer ``y = x @ W.T + b`` with ``W`` stored compressed under a transposable N:M mask.

    Storage is what a kernel reads and nothing more: the kept values (the parameter
    ``values``, shape ``(out_features, ceil(in_features/m) * n)``) and their packed in-group
    positions (the int32 buffer ``indices``, ``ceil(log2 m)`` bits per kept value), plus for
    ``n = 1`` one validity bit per slot (``valid_bits``). For fp16 2:4 that is 1.125 bytes per
    dense weight (0.56x the dense weight). All three products of a training step run
    compressed (see :mod:`transmask.kernels.autograd`): the forward and input-gradient
    products read the same storage, the weight gradient is computed at the kept entries only.
    The transposable mask is what lets the 2:4 hardware path run the input gradient too.

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

    Attributes
    ----------
    cache_hw : bool
        Keep the 2:4 hardware forms between calls while ``values`` is unchanged (inference on
        many tokens; costs ~2.25 bytes per weight). Default False: built per call.

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
        self.cache_hw = False
        self._hw_cache: dict = {}
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

        ``mask=None`` computes the optimal transposable mask of ``|weight|``. The mask must be
        transposable (so that the hardware 2:4 path can run ``W.T``); ValueError otherwise.
        """
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight must have shape {(self.out_features, self.in_features)}, got {tuple(weight.shape)}")
        if mask is None:
            import transmask

            mask = transmask.optimal_mask(weight.detach().abs().float().cpu().numpy(), self.n, self.m)
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        layout = compress_transposable(weight.detach(), mask, self.n, self.m)  # validates both directions
        fwd = layout.forward
        self.values = nn.Parameter(fwd.values.clone(), requires_grad=self.values.requires_grad)
        self.register_buffer("indices", fwd.indices.clone())
        bits = None
        if self.n == 1:
            # which slots hold a kept entry: the mask at the slot's column (empty groups are
            # indistinguishable from "position 0" in the index fields when n = 1)
            cols = layout.forward_columns
            valid = (cols.cpu().numpy() if isinstance(cols, torch.Tensor) else np.asarray(cols)) < fwd.groups * self.m
            bits = valid_bitmask(fwd.indices, self.in_features, self.n, self.m, torch.from_numpy(valid))
        self.register_buffer("valid_bits", bits)
        self._hw_cache.clear()

    def _apply(self, fn, *args, **kwargs):
        self._hw_cache.clear()  # device or dtype moves invalidate the hardware forms
        return super()._apply(fn, *args, **kwargs)

    def compressed(self) -> CompressedNM:
        """The weight as :class:`~transmask.sparse.CompressedNM` (``values`` is the live parameter)."""
        return CompressedNM(self.values, self.indices, (self.out_features, self.in_features), self.n, self.m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return transposable_nm_linear(x, self.values, self.indices, self.in_features, self.n, self.m, self.bias,
                                      valid_bits=self.valid_bits, hw_cache=self._hw_cache if self.cache_hw else None)

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """The dense ``(out_features, in_features)`` weight ``W * mask``."""
        return CompressedNM(self.values.detach(), self.indices, (self.out_features, self.in_features), self.n,
                            self.m).decompress()

    @torch.no_grad()
    def mask(self) -> torch.Tensor:
        """The transposable mask, bool ``(out_features, in_features)``.

        Exact for ``n >= 2``; for ``n = 1`` decoded with the validity bits.
        """
        c = CompressedNM(self.values.detach(), self.indices, (self.out_features, self.in_features), self.n, self.m)
        if self.valid_bits is None:
            return c.to_mask()
        from .convert import _valid_from_bits

        valid = _valid_from_bits(self.valid_bits, c.slots)
        idx = c.unpacked_indices()
        cols = idx + (torch.arange(c.slots, device=idx.device) // self.n * self.m)[None, :]
        out = torch.zeros((self.out_features, c.groups * self.m), dtype=torch.bool, device=idx.device)
        rr, ss = torch.nonzero(valid, as_tuple=True)
        out[rr, cols[rr, ss]] = True
        return out[:, :self.in_features]

    def memory_bytes(self) -> int:
        """Bytes of the layer's weight storage: values + indices (+ validity bits)."""
        size = sum(t.numel() * t.element_size() for t in (self.values, self.indices) if t is not None)
        if self.valid_bits is not None:
            size += self.valid_bits.numel() * self.valid_bits.element_size()
        return int(size)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, n={self.n}, m={self.m}, bias={self.bias is not None}"
