"""Training with (transposable) N:M masks: masked Linear/Conv2d layers and a mask controller.

:func:`sparsify` swaps every eligible ``nn.Linear`` and ``nn.Conv2d`` of a model
for a :class:`MaskedLinear` / :class:`MaskedConv2d` that keeps the *dense*
``weight`` parameter (the same ``Parameter`` object, so an optimizer built
before or after works) plus a boolean buffer ``mask`` shaped like the weight.

* Forward uses ``weight * mask``.
* Backward is straight-through (STE): the gradient of the masked weight is
  passed to *every* dense weight, so pruned weights keep learning and can come
  back when the mask is recomputed. With ``decay > 0`` the SR-STE term
  ``decay * (~mask) * weight`` is added to the gradient of the pruned weights
  (Zhou et al., ICLR 2021; they use ``decay = 2e-4``), which pulls them towards
  zero and stabilises the mask.
* The mask is recomputed from ``|weight|`` (in the layer's 2-D view, see
  :mod:`transmask.views`) every ``update_every`` optimizer steps with
  the chosen solver: :func:`transmask.optimal_mask` when ``transposable=True``
  (default ``method="exact"``, the optimal mask, about as fast as the paper's
  2-approximation ``method="approx"``), :func:`transmask.nm_mask` (row-wise
  N:M) otherwise.
* ``mask`` is a buffer, so it is saved in ``state_dict()``; the layer's N:M
  configuration is saved too (as the module's extra state).

Usage::

    ctl = sparsify(model, 4, 8, transposable=True, update_every=40)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctl.attach(opt)              # or call ctl.step() after every opt.step()
    ...train...
    ctl.freeze()                 # fix the masks, zero the pruned weights
    dense_model = ctl.export()   # plain nn.Linear/nn.Conv2d with zeros where pruned

``n`` is the number of weights *kept* of every ``m`` (4:8 keeps 4 of 8).

These layers store the dense weight and a mask (what sparse *training* needs);
for inference with compressed N:M storage on Triton kernels see
:class:`transmask.kernels.SparseLinear`.
"""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from .._optional import require
from ..views import view_shape, view_to_weight, weight_to_2d

torch = require("torch", "transmask.training")
nn = torch.nn
F = torch.nn.functional

__all__ = [
    "sparsify",
    "MaskController",
    "MaskedLinear",
    "MaskedConv2d",
    "MaskedLayerMixin",
    "compute_mask",
    "masked_layers",
    "export",
    "freeze",
    "LayerSummary",
]


# ---------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------

def compute_mask(
    weight,
    n: int,
    m: int,
    transposable: bool = True,
    method: str = "exact",
    keep: str = "exactly",
    importance=None,
):
    """Mask (bool tensor shaped like ``weight``) of a Linear or Conv2d weight.

    The mask is computed on ``|importance|`` (default ``|weight|``) in the layer's
    2-D view (Linear ``(out, in)``; Conv2d ``(out, kh*kw*cin)`` channels-last):
    :func:`transmask.optimal_mask` with ``method``/``keep`` when ``transposable``
    (for CUDA weights on the GPU, :func:`transmask.solvers.gpu.optimal_mask_torch`;
    ``method="exact"`` runs there, other methods go through the host), else
    :func:`transmask.nm_mask` in numpy. Returned on ``weight``'s device.
    """
    import transmask as tm

    src = weight if importance is None else importance
    if tuple(src.shape) != tuple(weight.shape):
        raise ValueError(f"importance has shape {tuple(src.shape)} but the weight has shape {tuple(weight.shape)}")
    if transposable and tm.masks._is_cuda_tensor(src):  # optimal_mask solves it on the GPU: no host round trip
        mask2d = tm.optimal_mask(weight_to_2d(src.detach()), n, m, method=method, keep=keep)
        return view_to_weight(mask2d, weight.shape).to(device=weight.device)
    w2d = weight_to_2d(src.detach()).to(device="cpu", dtype=torch.float32)
    a = np.abs(w2d.numpy())
    if transposable:
        mask2d = tm.optimal_mask(a, n, m, method=method, keep=keep)
    else:
        mask2d = tm.nm_mask(a, n, m)
    mask = view_to_weight(torch.from_numpy(np.ascontiguousarray(mask2d)), weight.shape)
    return mask.to(device=weight.device)


class _MaskedWeight(torch.autograd.Function):
    """``weight * mask`` with a straight-through (optionally SR-STE) backward."""

    @staticmethod
    def forward(ctx, weight, mask, decay: float, ste: bool):
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        ctx.ste = ste
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        g = grad if ctx.ste else grad * mask
        if ctx.decay:
            g = g + ctx.decay * (~mask) * weight
        return g, None, None, None


# ---------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------

class MaskedLayerMixin:
    """Shared behaviour of :class:`MaskedLinear` and :class:`MaskedConv2d`.

    Attributes
    ----------
    mask : torch.BoolTensor (buffer, in ``state_dict``)
        ``True`` where the weight is kept; shaped like ``weight``.
    n, m, transposable, method, keep
        How the mask is computed (saved in ``state_dict`` as extra state).
    decay : float
        SR-STE decay on pruned weights (0 = plain STE).
    ste : bool
        Straight-through gradients to pruned weights (False: they get none).
    frozen : bool
        When True, :meth:`update_mask` does nothing unless forced.
    """

    _CONFIG = ("n", "m", "transposable", "method", "keep")
    _DENSE = None  # the wrapped torch layer class, set by each subclass

    @staticmethod
    def _dense_args(layer) -> dict:
        """Constructor arguments of the dense layer class that rebuild ``layer``'s shape."""
        raise NotImplementedError

    @classmethod
    def from_dense(cls, layer, n, m, **sparse_kw):
        """Wrap ``layer`` sharing its ``weight``/``bias`` Parameters (no copy)."""
        new = cls.__new__(cls)
        cls._DENSE.__init__(new, **cls._dense_args(layer), device="meta")
        new.weight = layer.weight
        new.bias = layer.bias
        new.train(layer.training)
        new._init_sparse(n, m, **sparse_kw)
        return new

    def to_dense(self):
        """A plain ``nn.Linear``/``nn.Conv2d`` whose weight is ``weight * mask`` (zeros where pruned)."""
        dense = self._DENSE(**self._dense_args(self), device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            dense.weight.copy_(self.sparse_weight())
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        dense.train(self.training)
        return dense

    def _init_sparse(self, n, m, transposable=True, method="exact", keep="exactly", decay=0.0, ste=True):
        from .._validation import check_keep, check_nm

        self.n, self.m = check_nm(n, m)
        self.keep = check_keep(keep)
        self.transposable = bool(transposable)
        if self.transposable:
            from .. import solvers

            solvers.get(method)  # ValueError for an unknown method, now rather than at the first update
        self.method = method
        self.decay = float(decay)
        self.ste = bool(ste)
        self.frozen = False
        self.register_buffer("mask", torch.ones_like(self.weight, dtype=torch.bool, device=self.weight.device))
        self.update_mask(force=True)

    # -- the mask -------------------------------------------------------
    @torch.no_grad()
    def update_mask(self, importance=None, force: bool = False) -> int:
        """Recompute the mask from ``|weight|`` (or ``|importance|``); return how many entries changed.

        Does nothing (returns 0) on a frozen layer unless ``force=True``.
        """
        if self.frozen and not force:
            return 0
        new = compute_mask(self.weight, self.n, self.m, self.transposable, self.method, self.keep, importance)
        changed = int((new != self.mask).sum().item())
        self.mask.copy_(new)
        return changed

    def masked_weight(self):
        """The weight the forward uses: ``weight * mask``, straight-through in backward."""
        if self.frozen:
            return self.weight * self.mask
        return _MaskedWeight.apply(self.weight, self.mask, self.decay, self.ste)

    def sparse_weight(self):
        """``weight * mask`` detached (what :func:`export` writes)."""
        return (self.weight * self.mask).detach()

    def mask_2d(self) -> np.ndarray:
        """The mask in the 2-D view the solver works on (numpy bool)."""
        return weight_to_2d(self.mask.detach().cpu()).numpy().copy()

    def weight_2d(self) -> np.ndarray:
        """The dense weight in the 2-D view (numpy float32)."""
        return weight_to_2d(self.weight.detach().to("cpu", torch.float32)).numpy().copy()

    def view_shape(self) -> tuple[int, int]:
        return view_shape(self.weight.shape)

    def is_valid(self) -> bool:
        """True when the mask is transposable N:M (or row-wise N:M when ``transposable=False``)."""
        import transmask as tm

        M = self.mask_2d()
        if self.transposable:
            return bool(tm.is_transposable(M, self.n, self.m, keep=self.keep))
        return bool(tm.is_nm(M, self.n, self.m, keep="at_most"))

    @torch.no_grad()
    def freeze(self) -> None:
        """Fix the mask, zero the pruned weights, stop straight-through gradients to them."""
        self.weight.mul_(self.mask)
        self.frozen = True

    def unfreeze(self) -> None:
        self.frozen = False

    # -- state ----------------------------------------------------------
    def get_extra_state(self):
        return {k: getattr(self, k) for k in self._CONFIG} | {"frozen": self.frozen}

    def set_extra_state(self, state):
        for k in self._CONFIG:
            if k in state:
                setattr(self, k, state[k])
        self.frozen = bool(state.get("frozen", self.frozen))

    def _sparse_repr(self) -> str:
        kind = "transposable" if self.transposable else "row-wise"
        s = f"{self.n}:{self.m} {kind}"
        if self.transposable:
            s += f", method={self.method!r}, keep={self.keep!r}"
        if self.decay:
            s += f", decay={self.decay:g}"
        if self.frozen:
            s += ", frozen"
        return s


class MaskedLinear(MaskedLayerMixin, nn.Linear):
    """``nn.Linear`` whose forward uses ``weight * mask`` (see :class:`MaskedLayerMixin`).

    Build one with :meth:`from_dense` (or via :func:`sparsify`).
    """

    _DENSE = nn.Linear

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *, n=2, m=4, **sparse_kw):
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_sparse(n, m, **sparse_kw)

    @staticmethod
    def _dense_args(layer) -> dict:
        return dict(in_features=layer.in_features, out_features=layer.out_features, bias=layer.bias is not None)

    def forward(self, x):
        return F.linear(x, self.masked_weight(), self.bias)

    def extra_repr(self) -> str:
        return nn.Linear.extra_repr(self) + ", " + self._sparse_repr()


class MaskedConv2d(MaskedLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` whose forward uses ``weight * mask``; the mask lives on the
    channels-last view ``(out_channels, kh*kw*in_channels/groups)`` (see
    :mod:`transmask.views`)."""

    _DENSE = nn.Conv2d

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, n=2, m=4, **sparse_kw):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                           bias, padding_mode, device=device, dtype=dtype)
        self._init_sparse(n, m, **sparse_kw)

    @staticmethod
    def _dense_args(conv) -> dict:
        return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                    stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)

    def forward(self, x):
        return self._conv_forward(x, self.masked_weight(), self.bias)

    def extra_repr(self) -> str:
        return nn.Conv2d.extra_repr(self) + ", " + self._sparse_repr()


_WRAPPERS = {nn.Linear: MaskedLinear, nn.Conv2d: MaskedConv2d}


# ---------------------------------------------------------------------------
# model-level helpers
# ---------------------------------------------------------------------------

def masked_layers(model) -> dict[str, MaskedLayerMixin]:
    """``{qualified name: layer}`` of the sparse layers of ``model``, in registration order."""
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, MaskedLayerMixin)}


def _eligible(model, skip_first: bool, skip_last: bool, exclude: Iterable[str]) -> list[str]:
    # exact types only: subclasses (e.g. the out_proj of nn.MultiheadAttention) may not call forward()
    names = [name for name, mod in model.named_modules() if type(mod) in _WRAPPERS]
    order = list(names)
    if skip_first and order:
        names.remove(order[0])
    if skip_last and order and order[-1] in names:
        names.remove(order[-1])
    pats = [exclude] if isinstance(exclude, str) else list(exclude)
    return [nm_ for nm_ in names if not any(fnmatch.fnmatchcase(nm_, p) for p in pats)]


def _set_submodule(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _keep_masks_out_of_ddp(model) -> None:
    """List the mask buffers in ``model._ddp_params_and_buffers_to_ignore``, the attribute that
    ``DistributedDataParallel`` reads when it is built, so that it never broadcasts them.

    Masks are recomputed on every rank from that rank's weights, which DDP keeps identical
    (same gradients, same optimizer step), so every rank computes the same masks at the same
    step without any communication. By default DDP would otherwise broadcast every buffer from
    rank 0 before each forward (``broadcast_buffers=True``): one byte per weight each step.
    """
    names = [f"{name}.mask" if name else "mask" for name in masked_layers(model)]
    ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", ()))
    model._ddp_params_and_buffers_to_ignore = ignored + [n for n in names if n not in ignored]


def export(model, inplace: bool = False):
    """Replace every sparse layer by a plain ``nn.Linear``/``nn.Conv2d`` holding ``weight * mask``.

    The result has no masks and no transmask classes: its ``state_dict`` loads into
    the original dense architecture, with zeros where weights were pruned. Returns a
    copy unless ``inplace=True``.
    """
    if not inplace:
        model = copy.deepcopy(model)
    masks = set()
    for name, layer in list(masked_layers(model).items()):
        if name == "":
            raise TypeError("export() needs a model that contains sparse layers, not a sparse layer itself; use layer.to_dense()")
        _set_submodule(model, name, layer.to_dense())
        masks.add(f"{name}.mask")
    if hasattr(model, "_ddp_params_and_buffers_to_ignore"):  # the masks are gone: DDP may forget them too
        model._ddp_params_and_buffers_to_ignore = [n for n in model._ddp_params_and_buffers_to_ignore if n not in masks]
    return model


def freeze(model) -> None:
    """Freeze every sparse layer of ``model``: fixed masks, pruned weights zeroed."""
    for layer in masked_layers(model).values():
        layer.freeze()


@dataclass
class LayerSummary:
    """One row of :meth:`MaskController.summary`."""

    name: str
    kind: str
    view_shape: tuple[int, int]
    pattern: str
    density: float
    kept_l1_fraction: float
    valid: bool

    def as_dict(self) -> dict:
        return asdict(self)


def format_table(rows: list[dict], floatfmt: str = ".4g") -> str:
    """Plain-text table of a list of dicts (same keys)."""
    if not rows:
        return "(no layers)"
    keys = list(rows[0])
    cells = [[(format(r[k], floatfmt) if isinstance(r[k], float) else str(r[k])) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(keys), line(["-" * w for w in widths])] + [line(c) for c in cells])


class MaskController:
    """Returned by :func:`sparsify`: schedules mask updates and summarises the sparse layers.

    Call :meth:`step` once after every ``optimizer.step()`` (or :meth:`attach` the
    optimizer once, which does it through a step hook); every ``update_every``
    steps all masks are recomputed. ``update_every=None`` (or 0) keeps the masks
    fixed; ``update_until`` is the last step at which an update may happen.

    Stop the updates (``update_until``, or :meth:`freeze`) some steps before the
    end of training: right after an update the network has not adapted to the new
    mask yet (on the digits CNN, evaluating right after the last update cost 15
    points of accuracy; fixing the masks for the last 20 % of training recovered
    them). With SGD + momentum (as in the papers) the number of flipped entries
    per update shrinks as training converges; with Adam, whose normalised steps
    keep moving pruned weights, it stays high.
    """

    def __init__(self, model, update_every: int | None = 40, update_until: int | None = None):
        for name, value in (("update_every", update_every), ("update_until", update_until)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        self.model = model
        self.update_every = update_every or None
        self.update_until = update_until
        self.steps = 0
        self.history: list[dict] = []  # one entry per mask update: step and changed entries per layer

    @property
    def layers(self) -> dict[str, MaskedLayerMixin]:
        return masked_layers(self.model)

    def step(self) -> bool:
        """Count one optimizer step; recompute the masks when it is due. Returns True if they were."""
        self.steps += 1
        if self.update_until is not None and self.steps > self.update_until:
            return False
        if self.update_every and self.steps % self.update_every == 0:
            self.update_masks()
            return True
        return False

    def update_masks(self) -> dict[str, int]:
        """Recompute the masks of all non-frozen layers now; ``{name: entries changed}``."""
        changed = {name: layer.update_mask() for name, layer in self.layers.items()}
        self.history.append({"step": self.steps, "changed": changed})
        return changed

    def attach(self, optimizer):
        """Call :meth:`step` after every ``optimizer.step()``; returns the hook handle (``.remove()``)."""
        return optimizer.register_step_post_hook(lambda *_args, **_kw: self.step())

    def freeze(self) -> None:
        """Fix all masks and zero the pruned weights (fine-tuning afterwards keeps the sparsity)."""
        freeze(self.model)

    def export(self, inplace: bool = False):
        """Plain dense-layer model with zeros where pruned; see :func:`export`."""
        return export(self.model, inplace=inplace)

    def all_valid(self) -> bool:
        """True when every mask is transposable N:M (row-wise N:M for ``transposable=False``)."""
        return all(layer.is_valid() for layer in self.layers.values())

    def density(self) -> float:
        """Fraction of the sparse layers' weights that are kept."""
        kept = sum(int(layer.mask.sum()) for layer in self.layers.values())
        total = sum(layer.mask.numel() for layer in self.layers.values())
        return kept / total if total else 1.0

    def summary(self, as_text: bool = False):
        """Per-layer :class:`LayerSummary` list (or a text table): view shape, density, kept L1, validity."""
        import transmask as tm

        rows = []
        for name, layer in self.layers.items():
            W, M = layer.weight_2d(), layer.mask_2d()
            total = float(np.abs(W, dtype=np.float64).sum())
            rows.append(LayerSummary(
                name=name,
                kind=type(layer).__name__,
                view_shape=layer.view_shape(),
                pattern=layer._sparse_repr(),
                density=float(M.mean()),
                kept_l1_fraction=tm.kept_l1(W, M) / total if total > 0 else 1.0,
                valid=layer.is_valid(),
            ))
        return format_table([r.as_dict() for r in rows]) if as_text else rows

    def state_dict(self) -> dict:
        return {"steps": self.steps, "update_every": self.update_every, "update_until": self.update_until}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.update_every = state.get("update_every", self.update_every)
        self.update_until = state.get("update_until", self.update_until)

    def __repr__(self) -> str:
        return (f"MaskController({len(self.layers)} sparse layers, update_every={self.update_every}, "
                f"steps={self.steps}, density={self.density():.3f})")


def sparsify(
    model,
    n: int,
    m: int,
    *,
    transposable: bool = True,
    method: str = "exact",
    keep: str = "exactly",
    update_every: int | None = 40,
    update_until: int | None = None,
    decay: float = 0.0,
    ste: bool = True,
    skip_first: bool = False,
    skip_last: bool = False,
    exclude: Iterable[str] = (),
    optimizer=None,
) -> MaskController:
    """Make the Linear and Conv2d layers of ``model`` N:M sparse (in place) for training.

    Every ``nn.Linear`` and ``nn.Conv2d`` (exact types) is replaced by a
    :class:`MaskedLinear` / :class:`MaskedConv2d` sharing its parameters, with a
    mask computed now from ``|weight|``. The forward uses ``weight * mask``;
    gradients reach all dense weights (straight-through), plus ``decay * weight``
    on the pruned ones (SR-STE) when ``decay > 0``.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place (also returned as ``controller.model``).
    n, m : int
        Keep ``n`` of every ``m`` (4:8 keeps 4 of 8).
    transposable : bool
        True (default): transposable N:M masks from :func:`transmask.optimal_mask`
        (forward ``W x`` and backward ``W.T dy`` both N:M). False: row-wise N:M
        from :func:`transmask.nm_mask`.
    method, keep : str
        Solver and counting mode for :func:`transmask.optimal_mask`. Default
        ``"exact"``: the mask that keeps the most ``|W|``, about as fast as the
        paper's 2-approximation (``"approx"``, which it recomputed every 40
        iterations; it keeps at least half of the optimum, 98.9-99.6 % of it on
        random Gaussian and Student-t matrices, see ``bench/results/solvers.md``).
        ``keep="exactly"``: density exactly ``n/m``.
    update_every : int or None
        Recompute masks every this many optimizer steps (counted by
        :meth:`MaskController.step`); None or 0: fixed masks.
    update_until : int or None
        No mask updates after this many steps (None: until the end). Fixing the
        masks for the last 10-20 % of training lets the network adapt to them.
    decay : float
        SR-STE decay on pruned weights (Zhou et al. use 2e-4 with SGD); 0 = plain
        STE. It is added to the gradient, so adaptive optimizers (Adam) rescale it.
    ste : bool
        Pass gradients to pruned weights (straight-through). False trains only the
        kept weights (a fixed-mask fine-tune).
    skip_first, skip_last : bool
        Leave the first / last eligible layer dense, in ``model.named_modules()``
        order (the forward order for sequential models).
    exclude : iterable of str
        Layer names (``fnmatch`` patterns, e.g. ``"head.*"``) to leave dense.
    optimizer : torch.optim.Optimizer, optional
        When given, :meth:`MaskController.attach` is called on it, so masks update
        without calling ``controller.step()`` yourself.

    Returns
    -------
    MaskController
        ``.step()`` after each optimizer step, ``.freeze()``, ``.export()``,
        ``.summary()``, ``.all_valid()``.

    Notes
    -----
    Conv2d masks live on the channels-last 2-D view ``(out_channels,
    kh*kw*in_channels/groups)``: groups of ``m`` consecutive input channels at one
    kernel position (see :mod:`transmask.views`).

    Distributed data parallel training (``torch.nn.parallel.DistributedDataParallel``)
    needs nothing more: the masks are buffers, not parameters (no gradient buckets),
    and sparsify keeps them out of DDP's buffer broadcasts. Each rank recomputes its
    masks from its own weights, which DDP keeps identical, so the masks agree on
    every rank after every update with no extra communication. The weights must
    therefore agree when the masks are first computed: seed every rank alike (or
    load the same checkpoint) before ``sparsify``, or build DDP first (it copies rank
    0's weights to all ranks) and then call ``sparsify(ddp.module, ...)``.

    The ``state_dict`` holds ``weight`` (dense), ``bias``, ``mask`` and the N:M
    configuration of each sparse layer. To load it, sparsify a freshly built model
    the same way, then ``model.load_state_dict(sd)``; the saved masks replace the
    freshly computed ones.

    Examples
    --------
    >>> import torch, transmask as tm
    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    >>> ctl = tm.training.sparsify(net, 2, 4)
    >>> ctl.all_valid(), round(ctl.density(), 2)
    (True, 0.5)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if type(model) in _WRAPPERS:
        raise TypeError("sparsify() takes a model that contains Linear/Conv2d layers; wrap a single layer with "
                        "MaskedLinear.from_dense / MaskedConv2d.from_dense")
    controller = MaskController(model, update_every, update_until)
    for name in _eligible(model, skip_first, skip_last, exclude):
        mod = model.get_submodule(name)
        new = _WRAPPERS[type(mod)].from_dense(mod, n, m, transposable=transposable, method=method, keep=keep,
                                              decay=decay, ste=ste)
        _set_submodule(model, name, new)
    _keep_masks_out_of_ddp(model)
    if optimizer is not None:
        controller.attach(optimizer)
    return controller
