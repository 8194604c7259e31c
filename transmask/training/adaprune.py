r"""AdaPrune: convert a trained dense (or unstructured-sparse) model to (transposable) N:M without retraining.

For every Linear/Conv2d layer, in forward order, AdaPrune fixes the N:M mask
``M`` (from ``|W|`` with the chosen solver, as magnitude pruning would) and then
re-fits the kept weights on a small calibration set so the layer reproduces the
dense layer's output:

.. math::

    \min_{W'} \; \lVert W X - (M \odot W') X' \rVert_F^2

where ``X`` is the dense model's input to the layer and ``X'`` the input in the
model pruned so far (``sequential=True``, so each layer also corrects the error
of the layers before it; ``sequential=False`` uses ``X' = X``). The bias is fitted
too. Two fits:

* ``fit="adam"``: Adam on the cached inputs (the paper: about 1000 steps per layer);
  any Linear or Conv2d.
* ``fit="lstsq"``: the closed-form (ridge-regularised) least-squares solution,
  row by row on the kept entries; Linear layers, and Conv2d layers with
  ``groups=1`` and zero padding through their unfolded (im2col) inputs; other
  layers fall back to Adam.

Afterwards the BatchNorm running statistics are re-estimated on the calibration
data (:func:`reestimate_batchnorm`), since pruning shifts the activations.

Reference: I. Hubara et al., "Accelerated Sparse Neural Training: A Provable and
Efficient Method to Find N:M Transposable Masks", NeurIPS 2021 (AdaPrune);
AdaPrune follows AdaQuant (Hubara et al., "Accurate Post Training Quantization
With Small Calibration Sets", ICML 2021).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np

from .._optional import require
from .sparsify import MaskedLayerMixin, format_table, masked_layers, sparsify

torch = require("torch", "transmask.training.adaprune")
nn = torch.nn
F = torch.nn.functional

__all__ = [
    "adaprune",
    "magnitude_prune",
    "reestimate_batchnorm",
    "layer_errors",
    "AdaPruneResult",
    "AdaPruneLayerReport",
]


# ---------------------------------------------------------------------------
# data plumbing
# ---------------------------------------------------------------------------

def _batches(data, batch_size: int = 256) -> list:
    """Calibration data as a list of input tensors: a tensor (split in batches) or an iterable of
    tensors or of ``(x, ...)`` tuples (e.g. a DataLoader)."""
    if isinstance(data, torch.Tensor):
        return list(torch.split(data, batch_size))
    out = []
    for b in data:
        out.append(b[0] if isinstance(b, (tuple, list)) else b)
    if not out:
        raise ValueError("the calibration data is empty")
    return out


class _Stop(Exception):
    pass


@torch.no_grad()
def _capture(model, layer_name: str, batches: list, want_output: bool = False):
    """Inputs (and outputs) of one layer over all batches; the forward stops at that layer when
    only inputs are wanted."""
    layer = model.get_submodule(layer_name)
    xs, ys = [], []

    def hook(_mod, args, output=None):
        xs.append(args[0].detach())
        if output is not None:
            ys.append(output.detach())
        else:
            raise _Stop

    handle = layer.register_forward_hook(hook) if want_output else layer.register_forward_pre_hook(hook)
    was_training = model.training
    model.eval()
    try:
        for b in batches:
            try:
                model(b)
            except _Stop:
                pass
    finally:
        handle.remove()
        model.train(was_training)
    return (torch.cat(xs), torch.cat(ys)) if want_output else torch.cat(xs)


def _rel_err(pred, target) -> float:
    den = float((target.double() ** 2).sum())
    num = float(((pred.double() - target.double()) ** 2).sum())
    return num / den if den > 0 else num


@torch.no_grad()
def _layer_out(layer, x, batch_size: int = 1024):
    return torch.cat([layer(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


# ---------------------------------------------------------------------------
# fits
# ---------------------------------------------------------------------------

def _fit_adam(layer, x, y, steps: int, lr: float, batch_size: int | None, fit_bias: bool, gen, bar=None):
    params = [layer.weight] + ([layer.bias] if fit_bias and layer.bias is not None else [])
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    N = len(x)
    with torch.enable_grad():
        for _ in range(steps):
            if batch_size is None or batch_size >= N:
                xb, yb = x, y
            else:
                idx = torch.randint(N, (batch_size,), generator=gen)
                xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(layer(xb), yb)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
    for p, f in zip(params, flags):
        p.requires_grad_(f)
        p.grad = None
    with torch.no_grad():
        layer.weight.mul_(layer.mask)  # Adam moments never move pruned weights (zero grads), but be exact


def _lstsq_design(layer, x, y):
    """(A, T, mask2, unflatten) with A @ w_row ~ T[:, row] for the layer, or None if not supported."""
    if isinstance(layer, nn.Linear):
        A = x.reshape(-1, x.shape[-1])
        T = y.reshape(-1, y.shape[-1])
        return A, T, layer.mask, lambda w: w
    if isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
        A = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (N*L, cin*kh*kw), torch's (c, i, j) order
        T = y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
        shape = layer.weight.shape
        return A, T, layer.mask.reshape(shape[0], -1), lambda w: w.reshape(shape)
    return None


@torch.no_grad()
def _fit_lstsq(layer, design, ridge: float, fit_bias: bool, row_chunk: int = 64) -> None:
    A, T, mask2, unflatten = design
    A = A.double()
    T = T.double()
    has_bias = fit_bias and layer.bias is not None
    if layer.bias is not None and not has_bias:
        T = T - layer.bias.detach().double()
    if has_bias:
        A = torch.cat([A, torch.ones(len(A), 1, dtype=A.dtype)], 1)
    G = A.T @ A  # (d, d)
    B = A.T @ T  # (d, out)
    d = G.shape[0]
    lam = ridge * float(torch.diagonal(G).mean()) if ridge > 0 else 0.0
    keep = mask2.detach().cpu().to(torch.float64)
    if has_bias:
        keep = torch.cat([keep, torch.ones(len(keep), 1, dtype=keep.dtype)], 1)
    W = torch.zeros(keep.shape, dtype=G.dtype)
    for r0 in range(0, keep.shape[0], row_chunk):
        D = keep[r0:r0 + row_chunk]  # (r, d)
        # masked normal equations: D G D + lam D + (I - D) on the diagonal, so pruned entries solve to 0
        sys_ = D[:, :, None] * G[None] * D[:, None, :] + torch.diag_embed(lam * D + (1 - D))
        rhs = (D * B[:, r0:r0 + row_chunk].T).unsqueeze(-1).contiguous()
        # symmetric positive definite (lam > 0) -> Cholesky
        L, info = torch.linalg.cholesky_ex(sys_.contiguous())
        if int(info.max()) == 0:
            W[r0:r0 + row_chunk] = torch.cholesky_solve(rhs, L).squeeze(-1)
        else:  # ridge=0 with a rank-deficient input: minimum-norm least squares
            W[r0:r0 + row_chunk] = (torch.linalg.pinv(sys_, hermitian=True) @ rhs).squeeze(-1)
    if has_bias:
        layer.bias.copy_(W[:, -1].to(layer.bias.dtype))
        W = W[:, :-1]
    layer.weight.copy_(unflatten(W).to(layer.weight.dtype))
    layer.weight.mul_(layer.mask)


# ---------------------------------------------------------------------------
# public
# ---------------------------------------------------------------------------

@torch.no_grad()
def reestimate_batchnorm(model, data, batch_size: int = 256) -> int:
    """Recompute the running mean/variance of every BatchNorm layer of ``model`` on ``data``.

    The statistics are reset and re-accumulated as an exact average over all
    batches (``momentum=None``); other layers stay in eval mode (dropout off).
    ``data``: a tensor of inputs or an iterable of tensors / ``(x, ...)`` tuples.
    Returns the number of BatchNorm layers updated. The model is left in eval mode.
    """
    bns = [mod for mod in model.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        for b in _batches(data, batch_size):
            model(b)
    finally:
        for bn, mom in zip(bns, momenta):
            bn.momentum = mom
            bn.eval()
    return len(bns)


@torch.no_grad()
def layer_errors(dense_model, sparse_model, data, inputs: str = "sparse", batch_size: int = 256) -> dict[str, float]:
    r"""Relative reconstruction error of each sparse layer: ``||Y - Y'||^2 / ||Y||^2``.

    ``Y`` is the dense layer's output on the dense model's input to it. ``Y'`` is the
    sparse layer's output on ``inputs="sparse"``: its own input in the sparse model
    (errors of earlier layers propagate; the quantity AdaPrune minimises) or
    ``inputs="dense"``: the dense model's input (the layer in isolation). Layers are
    matched by name; every sparse layer of ``sparse_model`` must exist in ``dense_model``.
    """
    if inputs not in ("sparse", "dense"):
        raise ValueError(f"inputs must be 'sparse' or 'dense', got {inputs!r}")
    batches = _batches(data, batch_size)
    out = {}
    for name, layer in masked_layers(sparse_model).items():
        xd, yd = _capture(dense_model, name, batches, want_output=True)
        xs = _capture(sparse_model, name, batches) if inputs == "sparse" else xd
        was = layer.training
        layer.eval()
        out[name] = _rel_err(_layer_out(layer, xs), yd)
        layer.train(was)
    return out


@dataclass
class AdaPruneLayerReport:
    """Per-layer outcome of :func:`adaprune`. Errors are relative, ``||Y - Y'||^2 / ||Y||^2``, on the
    calibration inputs the fit used."""

    name: str
    kind: str
    view_shape: tuple[int, int]
    fit: str
    kept_l1_fraction: float  # of the dense |W| kept by the mask
    error_magnitude: float  # mask applied to the dense weights, no re-fit
    error_adaprune: float  # after the re-fit
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdaPruneResult:
    """What :func:`adaprune` returns: the pruned model and a report per layer."""

    model: object
    layers: list[AdaPruneLayerReport] = field(default_factory=list)
    bn_layers_reestimated: int = 0

    def summary(self, as_text: bool = True):
        rows = [r.as_dict() for r in self.layers]
        return format_table(rows) if as_text else rows


def magnitude_prune(
    model,
    n: int,
    m: int,
    *,
    transposable: bool = True,
    method: str = "exact",
    keep: str = "exactly",
    skip_first: bool = False,
    skip_last: bool = False,
    exclude: Iterable[str] = (),
    bn_data=None,
    inplace: bool = False,
):
    """One-shot N:M magnitude pruning (the baseline AdaPrune improves on).

    Returns a copy of ``model`` (unless ``inplace``) whose Linear/Conv2d layers are
    frozen :class:`~transmask.training.MaskedLinear`/``MaskedConv2d`` with the mask of
    ``|W|`` (:func:`transmask.optimal_mask` with ``method`` when ``transposable``, else
    :func:`transmask.nm_mask`) and pruned weights zeroed. With ``bn_data`` the
    BatchNorm statistics are re-estimated on it.
    """
    if not inplace:
        model = copy.deepcopy(model)
    ctl = sparsify(model, n, m, transposable=transposable, method=method, keep=keep, update_every=None,
                   skip_first=skip_first, skip_last=skip_last, exclude=exclude)
    ctl.freeze()
    if bn_data is not None:
        reestimate_batchnorm(model, bn_data)
    model.eval()
    return model


def adaprune(
    model,
    calib,
    n: int,
    m: int,
    *,
    transposable: bool = True,
    method: str = "exact",
    keep: str = "exactly",
    fit: str = "adam",
    steps: int = 1000,
    lr: float = 1e-3,
    batch_size: int | None = None,
    ridge: float = 1e-4,
    fit_bias: bool = True,
    sequential: bool = True,
    skip_first: bool = False,
    skip_last: bool = False,
    exclude: Iterable[str] = (),
    reestimate_bn: bool = True,
    bn_data=None,
    inplace: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> AdaPruneResult:
    r"""Prune ``model`` to (transposable) N:M and re-fit each layer on calibration data (AdaPrune).

    Parameters
    ----------
    model : torch.nn.Module
        A trained dense (or unstructured-sparse: zeros get the lowest priority)
        model. Not modified unless ``inplace=True``.
    calib : Tensor or iterable
        Calibration inputs: a tensor (batched internally) or an iterable of tensors
        or ``(x, ...)`` tuples. A few hundred to a thousand samples is typical. All
        layer inputs are cached in memory, one layer at a time.
    n, m : int
        Keep ``n`` of every ``m``.
    transposable, method, keep : see :func:`transmask.training.sparsify`
        How the masks are chosen (from ``|W|``; ``method="exact"`` by default here,
        since masks are computed once).
    fit : {"adam", "lstsq"}
        ``"adam"``: ``steps`` Adam steps (lr ``lr``, minibatches of ``batch_size``
        cached samples, None = all) on the mean squared output error. ``"lstsq"``:
        closed-form ridge least squares per output row over the kept weights
        (``ridge`` times the mean diagonal of the Gram matrix); Linear and
        ``groups=1`` zero-padded Conv2d layers, others fall back to Adam.
    fit_bias : bool
        Re-fit the bias as well.
    sequential : bool
        True: each layer is fitted on its inputs in the partly pruned model (and so
        corrects earlier layers' errors); False: on the dense model's inputs.
    skip_first, skip_last, exclude : see :func:`transmask.training.sparsify`
    reestimate_bn : bool
        Re-estimate BatchNorm statistics on ``bn_data`` (default: ``calib``) at the end.
    progress : bool
        tqdm progress bar over layers and steps.

    Returns
    -------
    AdaPruneResult
        ``.model``: frozen sparse layers (masks in ``state_dict``; use
        :func:`transmask.training.export` for plain layers); ``.layers``: per-layer
        :class:`AdaPruneLayerReport` (kept L1, error before/after);
        ``.summary()`` a text table.

    Examples
    --------
    >>> from transmask.training import adaprune                          # doctest: +SKIP
    >>> res = adaprune(model, x_calib, 2, 4, steps=1000)                 # doctest: +SKIP
    >>> print(res.summary())                                             # doctest: +SKIP
    """
    if fit not in ("adam", "lstsq"):
        raise ValueError(f"fit must be 'adam' or 'lstsq', got {fit!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    batches = _batches(calib)
    dense = copy.deepcopy(model).eval()
    work = model if inplace else copy.deepcopy(model)
    ctl = sparsify(work, n, m, transposable=transposable, method=method, keep=keep, update_every=None,
                   skip_first=skip_first, skip_last=skip_last, exclude=exclude)
    ctl.freeze()
    work.eval()
    gen = torch.Generator().manual_seed(seed)
    layers = ctl.layers
    reports = []

    if progress:
        tqdm = require("tqdm", "adaprune(progress=True)").tqdm
        bar_layers = tqdm(total=len(layers), desc="adaprune", unit="layer")
    else:
        bar_layers = None
    try:
        for name, layer in layers.items():
            t0 = time.perf_counter()
            dense_layer = dense.get_submodule(name)
            xd, y = _capture(dense, name, batches, want_output=True)
            x = _capture(work, name, batches) if sequential else xd
            err0 = _rel_err(_layer_out(layer, x), y)
            design = _lstsq_design(layer, x, y) if fit == "lstsq" else None
            if design is not None:
                _fit_lstsq(layer, design, ridge, fit_bias)
                used = "lstsq"
            else:
                bar_steps = tqdm(total=steps, desc=name, unit="step", leave=False) if bar_layers is not None else None
                _fit_adam(layer, x, y, steps, lr, batch_size, fit_bias, gen, bar_steps)
                if bar_steps is not None:
                    bar_steps.close()
                used = "adam"
            err1 = _rel_err(_layer_out(layer, x), y)
            Wd = np.abs(dense_layer.weight.detach().to("cpu", torch.float64).numpy())
            kept = float((Wd * layer.mask.cpu().numpy()).sum() / Wd.sum()) if Wd.sum() > 0 else 1.0
            reports.append(AdaPruneLayerReport(name, type(dense_layer).__name__, layer.view_shape(), used, kept,
                                               err0, err1, time.perf_counter() - t0))
            if bar_layers is not None:
                bar_layers.set_postfix(err=f"{err0:.3g}->{err1:.3g}")
                bar_layers.update(1)
    finally:
        if bar_layers is not None:
            bar_layers.close()
    n_bn = reestimate_batchnorm(work, bn_data if bn_data is not None else batches) if reestimate_bn else 0
    work.eval()
    return AdaPruneResult(work, reports, n_bn)
