"""Sparsity structures for one-shot pruning, and the mask of a saliency matrix under each.

A :class:`Structure` says *which* masks are allowed:

* ``"unstructured"``: any mask with the requested density (``1 - sparsity``);
* ``"nm"`` (row-wise N:M, written ``"2:4"``): every ``m`` consecutive inputs of an
  output row keep ``n``;
* ``"transposable"`` (written ``"2:4-T"``): every ``m x m`` tile keeps ``n`` per
  tile-row *and* tile-column (:func:`transmask.optimal_mask`), so ``W`` and ``W.T``
  are both N:M.

``n`` is the number *kept* of every ``m``. N:M structures need both dimensions of
the layer's weight (transposable) or its input dimension (row-wise) to be
multiples of ``m``: a hardware N:M format stores whole groups, so a layer that
does not divide raises a ``ValueError`` naming it (exclude it with
``exclude=[...]``) instead of being given a partial edge group.

:func:`select_mask` turns a non-negative saliency matrix (``|W|``, Wanda's
``|W| * ||X_j||``, OBS's ``W^2 / [H^-1]_jj^2``) into a mask of the structure.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from .._optional import require

torch = require("torch", "transmask.prune")

MaskMethod = Union[str, Callable[[np.ndarray, int, int], np.ndarray]]

_ALLOWED_M = (4, 8, 16, 32)
_KINDS = ("unstructured", "nm", "transposable")


@dataclass(frozen=True)
class Structure:
    """Which masks are allowed.

    Parameters
    ----------
    kind : {"unstructured", "nm", "transposable"}
    n, m : int
        Keep ``n`` of every ``m`` (N:M kinds); ``m`` in {4, 8, 16, 32}, ``1 <= n <= m``.
    sparsity : float
        Fraction pruned (``"unstructured"`` only; N:M kinds prune ``1 - n/m``).
    method : str or callable
        Transposable masks: a solver name of :func:`transmask.optimal_mask`
        (``"exact"``, ``"approx"``, ``"lp"``), or any callable
        ``(saliency2d: ndarray, n, m) -> bool ndarray`` (e.g. an entropic-OT peer).
    keep : {"exactly", "at_most"}
        Transposable masks: exactly ``n`` or at most ``n`` per tile-row/column.
    """

    kind: str
    n: int = 0
    m: int = 0
    sparsity: float = 0.5
    method: MaskMethod = "exact"
    keep: str = "exactly"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"structure kind must be one of {_KINDS}, got {self.kind!r}")
        if self.kind == "unstructured":
            if not 0.0 <= float(self.sparsity) < 1.0:
                raise ValueError(f"unstructured sparsity must be in [0, 1), got {self.sparsity!r}")
            return
        if not isinstance(self.n, (int, np.integer)) or not isinstance(self.m, (int, np.integer)):
            raise TypeError(f"n and m must be integers, got n={self.n!r}, m={self.m!r}")
        if self.m not in _ALLOWED_M:
            raise ValueError(f"m must be one of {_ALLOWED_M}, got m={self.m}")
        if not 1 <= self.n <= self.m:
            raise ValueError(f"n must satisfy 1 <= n <= m={self.m}, got n={self.n}")
        if self.keep not in ("exactly", "at_most"):
            raise ValueError(f"keep must be 'exactly' or 'at_most', got {self.keep!r}")
        if not (isinstance(self.method, str) or callable(self.method)):
            raise TypeError(f"method must be a solver name or a callable (saliency, n, m) -> mask, got {self.method!r}")

    @classmethod
    def parse(cls, text: str, *, method: MaskMethod = "exact", keep: str = "exactly") -> "Structure":
        """``"2:4"`` (row-wise), ``"2:4-T"`` (transposable), ``"unstructured"`` or ``"50%"``
        (unstructured at that sparsity), ``"unstructured:0.6"``.

        >>> Structure.parse("4:8-T").kind
        'transposable'
        """
        s = str(text).strip()
        match = re.fullmatch(r"(\d+):(\d+)(-[tT])?", s)
        if match:
            n, m, t = int(match.group(1)), int(match.group(2)), match.group(3)
            return cls("transposable" if t else "nm", n, m, method=method, keep=keep)
        low = s.lower()
        if low == "unstructured":
            return cls("unstructured", sparsity=0.5)
        match = re.fullmatch(r"unstructured:(\d*\.?\d+)", low) or re.fullmatch(r"(\d*\.?\d+)%", low)
        if match:
            value = float(match.group(1)) / (100.0 if low.endswith("%") else 1.0)
            return cls("unstructured", sparsity=value)
        raise ValueError(f"cannot parse structure {text!r}: use 'N:M', 'N:M-T', 'unstructured[:0.5]' or '50%'")

    @property
    def method_name(self) -> str:
        if isinstance(self.method, str):
            return self.method
        return getattr(self.method, "__name__", type(self.method).__name__)

    @property
    def label(self) -> str:
        """Short name, e.g. ``"2:4"``, ``"2:4-T exact"``, ``"2:4-T approx at_most"``, ``"unstructured 50%"``."""
        if self.kind == "unstructured":
            return f"unstructured {self.sparsity:.0%}"
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        text = f"{self.n}:{self.m}-T {self.method_name}"
        return text + (" at_most" if self.keep == "at_most" else "")

    @property
    def density(self) -> float:
        """Nominal kept fraction."""
        return 1.0 - self.sparsity if self.kind == "unstructured" else self.n / self.m

    def check_shape(self, shape, name: str = "layer") -> None:
        """Raise ValueError if this structure cannot tile a weight of ``shape`` (rows, cols)."""
        rows, cols = shape
        if self.kind == "unstructured":
            return
        if cols % self.m:
            raise ValueError(f"{name}: {self.n}:{self.m} needs the input dimension to be a multiple of m={self.m}, "
                             f"but the weight is {rows}x{cols}; exclude this layer (exclude=[{name!r}])")
        if self.kind == "transposable" and rows % self.m:
            raise ValueError(f"{name}: transposable {self.n}:{self.m} needs both dimensions to be multiples of "
                             f"m={self.m}, but the weight is {rows}x{cols}; exclude this layer (exclude=[{name!r}])")


def _topk_mask(scores, k: int, dim: int):
    """Bool mask keeping the ``k`` largest of ``scores`` along ``dim`` (ties: lower index, via a stable sort)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k <= 0:
        return mask
    idx = torch.sort(scores, dim=dim, descending=True, stable=True).indices.narrow(dim, 0, k)
    return mask.scatter_(dim, idx, True)


def transposable_mask(saliency, n: int, m: int, method: MaskMethod = "exact", keep: str = "exactly"):
    """Transposable mask of a (rows, cols) torch saliency with a named solver or a callable."""
    sal = saliency.detach().to("cpu", torch.float32).contiguous().numpy()
    if callable(method):
        out = np.asarray(method(sal, n, m), dtype=bool)
        if out.shape != sal.shape:
            raise ValueError(f"mask method {method!r} returned shape {out.shape}, expected {sal.shape}")
    else:
        from ..masks import optimal_mask

        out = optimal_mask(sal, n, m, method=method, keep=keep)
    return torch.from_numpy(np.ascontiguousarray(out)).to(saliency.device)


def rowwise_nm_mask(saliency, n: int, m: int):
    """Row-wise N:M mask (the ``n`` largest of every ``m`` consecutive columns of each row)."""
    rows, cols = saliency.shape
    groups = saliency.reshape(rows, cols // m, m)
    return _topk_mask(groups, n, dim=2).reshape(rows, cols)


def unstructured_mask(saliency, sparsity: float, per_row: bool = False):
    """Keep the largest ``1 - sparsity`` of ``saliency`` over the whole matrix, or in every row."""
    if per_row:
        keep = saliency.shape[1] - int(saliency.shape[1] * sparsity)
        return _topk_mask(saliency, keep, dim=1)
    flat = saliency.reshape(-1)
    keep = flat.numel() - int(flat.numel() * sparsity)
    return _topk_mask(flat, keep, dim=0).reshape(saliency.shape)


def select_mask(saliency, structure: Structure, per_row: bool = False):
    """Bool mask (True = kept) of a non-negative ``(rows, cols)`` saliency under ``structure``.

    ``per_row`` applies to unstructured masks only (each output row keeps the
    same fraction, Wanda's comparison group).
    """
    if structure.kind == "unstructured":
        return unstructured_mask(saliency, structure.sparsity, per_row=per_row)
    if structure.n == structure.m:
        return torch.ones_like(saliency, dtype=torch.bool)
    if structure.kind == "nm":
        return rowwise_nm_mask(saliency, structure.n, structure.m)
    return transposable_mask(saliency, structure.n, structure.m, structure.method, structure.keep)
