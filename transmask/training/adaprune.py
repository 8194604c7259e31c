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
* ``fit="lstsq"``: the closed-form least-squares solution, row by row on the kept
  entries, damped towards the magnitude-pruned weights ``w0``:
  :math:`\min_w \lVert X_K w - y \rVert^2 + \lambda \lVert w - w_0 \rVert^2` with
  :math:`\lambda` a fraction of the mean of ``diag(X^T X)`` (as SparseGPT dampens);
  Linear layers, and Conv2d layers with ``groups=1`` and zero padding through their
  unfolded (im2col) inputs; other layers fall back to Adam.

**Never worse than magnitude pruning on held-out data.** A fit with fewer
calibration rows than kept weights per output row is underdetermined (e.g. a
1536 -> 384 FFN layer at 2:4 keeps 768 weights per row: 512 calibration tokens
fit them exactly and predict new inputs worse than plain magnitude pruning), and
many Adam steps on few samples overfit the same way. So ``holdout`` (default 20 %)
of the calibration samples are kept out of every fit: the damping of the least-
squares fit is chosen on them (from ``ridge`` and :data:`DAMPINGS`), Adam keeps
the weights with the lowest held-out error seen (early stopping), and each layer
keeps its fit only where it beats the magnitude-pruned weights on them; otherwise
the magnitude-pruned weights stay. An underdetermined fit (fewer rows than
unknowns) warns, as does a numerically singular system when ``holdout=0``. The
per-layer report records the sizes, whether the fit was ill-posed, the damping,
both held-out errors and the choice.

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
import warnings
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

#: Dampings (fractions of mean diag(X^T X), as SparseGPT's) tried besides ``ridge`` by the least-squares
#: fit; the held-out calibration samples choose one. Without a held-out split, an ill-posed fit (fewer
#: samples than kept weights per output row, or an ill-conditioned system) uses the first.
DAMPINGS = (0.01, 0.1, 1.0)
#: A least-squares system whose smallest/largest eigenvalue ratio (correlation form) is below this is
#: ill-conditioned: numerically singular in float64 (collinear or duplicated inputs).
ILL_CONDITIONED = 1e-10


def _snapshot(layer):
    return layer.weight.detach().clone(), None if layer.bias is None else layer.bias.detach().clone()


@torch.no_grad()
def _restore(layer, snap) -> None:
    layer.weight.copy_(snap[0])
    if snap[1] is not None:
        layer.bias.copy_(snap[1])


def _fit_adam(layer, x, y, steps: int, lr: float, batch_size: int | None, fit_bias: bool, gen, bar=None,
              heldout=None, checks: int = 10):
    """Adam on the mean squared output error of ``layer`` on ``(x, y)``.

    With ``heldout=(xh, yh, error_at_start)`` the held-out error is measured every
    ``steps // checks`` steps and the weights with the lowest one (the start included)
    are kept: early stopping, so many steps on few samples cannot overfit. Returns the
    held-out error of the weights kept (None without ``heldout``).
    """
    params = [layer.weight] + ([layer.bias] if fit_bias and layer.bias is not None else [])
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    N = len(x)
    every = max(1, steps // checks)
    best = None if heldout is None else (heldout[2], _snapshot(layer))
    with torch.enable_grad():
        for step in range(1, steps + 1):
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
            if best is not None and (step % every == 0 or step == steps):
                err = _rel_err(_layer_out(layer, heldout[0]), heldout[1])
                if err < best[0]:
                    best = (err, _snapshot(layer))
    for p, f in zip(params, flags):
        p.requires_grad_(f)
        p.grad = None
    if best is not None:
        _restore(layer, best[1])
    with torch.no_grad():
        layer.weight.mul_(layer.mask)  # Adam moments never move pruned weights (zero grads), but be exact
    return None if best is None else best[0]


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


class _NormalEquations:
    """``G = A^T A``, ``B = A^T T`` of one layer's least-squares problem, the kept entries of each
    output row, and the current (magnitude-pruned) weights as the prior the damping pulls towards."""

    @torch.no_grad()
    def __init__(self, layer, design, fit_bias: bool):
        A, T, mask2, self.unflatten = design
        A, T = A.double(), T.double()
        self.has_bias = fit_bias and layer.bias is not None
        if layer.bias is not None and not self.has_bias:
            T = T - layer.bias.detach().double()
        self.samples = len(A)
        features = A.shape[1]
        if self.has_bias:
            A = torch.cat([A, torch.ones(len(A), 1, dtype=A.dtype)], 1)
        self.G = A.T @ A  # (d, d)
        self.B = A.T @ T  # (d, out)
        self.diag_mean = float(torch.diagonal(self.G)[:features].mean())  # of X^T X, the bias column left out
        self.keep = mask2.detach().cpu().bool()
        W0 = layer.weight.detach().double().reshape(mask2.shape)  # the flattening unflatten undoes
        if self.has_bias:
            self.keep = torch.cat([self.keep, torch.ones(len(self.keep), 1, dtype=torch.bool)], 1)
            W0 = torch.cat([W0, layer.bias.detach().double()[:, None]], 1)
        self.W0 = W0 * self.keep
        self.unknowns = int(self.keep.sum(1).max())  # kept weights (+ bias) of the fullest output row

    def min_eigen_ratio(self, rows: int = 8) -> float:
        """Smallest / largest eigenvalue of the systems ``G_KK`` of up to ``rows`` output rows (spread
        evenly), in correlation form over their inputs that are not always zero: the worst conditioning
        of the systems :meth:`solve` sees, estimated on a sample."""
        worst = 1.0
        for r in np.linspace(0, self.keep.shape[0] - 1, min(rows, self.keep.shape[0])).round().astype(int):
            K = self.keep[r].nonzero().squeeze(1)
            S = self.G[K][:, K]
            d = torch.diagonal(S)
            live = d > 0
            if int(live.sum()) < 2:
                continue
            s = d[live].rsqrt()
            ev = torch.linalg.eigvalsh(S[live][:, live] * s[:, None] * s[None, :])
            worst = min(worst, max(float(ev[0]), 0.0) / float(ev[-1]))
        return worst

    @torch.no_grad()
    def solve(self, damping: float, max_bytes: int = 1 << 26):
        r"""Per output row, :math:`\min_w \|A_K w - t\|^2 + \lambda \|w - w_0\|^2` over its kept entries ``K``
        (:math:`\lambda` = ``damping`` x mean diag(X^T X)): ``(G_KK + lam I) w = B_K + lam w0_K``.
        Rows are solved in chunks of gathered ``|K| x |K|`` systems (pruned entries stay 0)."""
        lam = damping * self.diag_mean if damping > 0 else 0.0
        rows = self.keep.shape[0]
        counts = self.keep.sum(1)
        k = int(counts.max())
        W = torch.zeros_like(self.W0)
        if k == 0:
            return W
        idx = self.keep.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :k]  # kept entries first
        valid = (torch.arange(k)[None, :] < counts[:, None]).double()
        Bt = self.B.T
        chunk = max(1, max_bytes // (8 * k * k))
        for r0 in range(0, rows, chunk):
            I, V = idx[r0:r0 + chunk], valid[r0:r0 + chunk]
            S = self.G[I[:, :, None], I[:, None, :]] * (V[:, :, None] * V[:, None, :])
            S.diagonal(dim1=1, dim2=2).add_(lam * V + (1 - V))  # padding solves to 0
            rhs = ((Bt[r0:r0 + chunk].gather(1, I) + lam * self.W0[r0:r0 + chunk].gather(1, I)) * V).unsqueeze(-1)
            L, info = torch.linalg.cholesky_ex(S)
            if int(info.max()) == 0:
                sol = torch.cholesky_solve(rhs, L).squeeze(-1)
            else:  # damping 0 with a rank-deficient input: minimum-norm least squares
                sol = (torch.linalg.pinv(S, hermitian=True) @ rhs).squeeze(-1)
            W[r0:r0 + chunk].scatter_(1, I, sol * V)
        return W

    @torch.no_grad()
    def assign(self, layer, W) -> None:
        if self.has_bias:
            layer.bias.copy_(W[:, -1].to(layer.bias.dtype))
            W = W[:, :-1]
        layer.weight.copy_(self.unflatten(W).to(layer.weight.dtype))
        layer.weight.mul_(layer.mask)


@torch.no_grad()
def _fit_lstsq(layer, design, ridge: float, fit_bias: bool) -> None:
    """Closed-form fit of the kept weights (and bias) with damping ``ridge`` towards the current weights."""
    eq = _NormalEquations(layer, design, fit_bias)
    eq.assign(layer, eq.solve(ridge))


def _holdout_split(samples: int, holdout: float, seed: int):
    """(fit rows, held-out rows) of the calibration samples, a seeded random split; (None, None) for
    ``holdout=0``. The same split serves every layer, so held-out samples never enter any fit."""
    if holdout == 0:
        return None, None
    held = max(1, int(round(holdout * samples)))
    if samples - held < 1:
        raise ValueError(f"holdout={holdout} leaves no calibration sample to fit on ({samples} given); "
                         "pass more calibration data or holdout=0")
    perm = torch.randperm(samples, generator=torch.Generator().manual_seed(seed))
    return perm[held:].sort().values, perm[:held].sort().values


def _problem_size(layer, y, fit_bias: bool) -> tuple[int, int]:
    """(rows of the fit: samples x output positions, most unknowns of one output row: kept weights + bias)."""
    channels = y.shape[1] if isinstance(layer, nn.Conv2d) else y.shape[-1]
    kept = int(layer.mask.reshape(layer.mask.shape[0], -1).sum(1).max())
    return y.numel() // channels, kept + int(fit_bias and layer.bias is not None)


def _fit_layer(name, layer, x, y, split, *, fit, steps, lr, batch_size, ridge, fit_bias, gen, bar) -> dict:
    """Re-fit one frozen masked layer on ``(x, y)``; keep the fit only where it beats the
    magnitude-pruned weights on the held-out rows of ``split``. Returns the report's fields."""
    fit_rows, held_rows = split
    xf, yf = (x, y) if fit_rows is None else (x[fit_rows], y[fit_rows])
    out = {"error_magnitude": _rel_err(_layer_out(layer, xf), yf)}
    heldout = None
    if held_rows is not None:
        xh, yh = x[held_rows], y[held_rows]
        heldout = (xh, yh, _rel_err(_layer_out(layer, xh), yh))
        out["heldout_error_magnitude"] = heldout[2]
    magnitude = _snapshot(layer)
    design = _lstsq_design(layer, xf, yf) if fit == "lstsq" else None
    if design is not None:
        eq = _NormalEquations(layer, design, fit_bias)
        samples, unknowns = eq.samples, eq.unknowns
        ill_conditioned = eq.min_eigen_ratio() < ILL_CONDITIONED
    else:
        samples, unknowns = _problem_size(layer, yf, fit_bias)
        ill_conditioned = False
    ill_posed = samples < unknowns or ill_conditioned
    out.update(fit="lstsq" if design is not None else "adam", samples=samples, unknowns_per_row=unknowns,
               ill_posed=ill_posed)
    # underdetermined fits always warn; a singular system only without the held-out check (with it, the
    # damping chosen on held-out samples pins the undetermined directions to the magnitude-pruned weights)
    if samples < unknowns or (ill_conditioned and heldout is None):
        why = [f"{samples} calibration rows for {unknowns} unknowns per output row"] if samples < unknowns else []
        why += ["a numerically singular least-squares system"] if ill_conditioned else []
        if heldout is None:
            remedy = (f"damping {max(ridge, DAMPINGS[0]):g} x mean diag(X^T X) towards the magnitude-pruned weights; "
                      if design is not None else "") + "holdout=0, so nothing checks the fit against magnitude pruning"
        else:
            remedy = ("the damping towards the magnitude-pruned weights" if design is not None else "early stopping")
            remedy += (" is chosen on the held-out calibration samples, and the fit is kept only if it beats "
                       "magnitude pruning there")
        warnings.warn(f"adaprune: layer {name!r}: the {out['fit']} fit is ill-posed ({' and '.join(why)}): {remedy}",
                      stacklevel=3)
    if design is not None:
        if heldout is not None:  # the damping that predicts the held-out samples best
            dampings = sorted({ridge, *DAMPINGS})
        else:
            dampings = [max(ridge, DAMPINGS[0]) if ill_posed else ridge]
        best = None
        for damping in dampings:
            eq.assign(layer, eq.solve(damping))
            err = _rel_err(_layer_out(layer, heldout[0]), heldout[1]) if heldout is not None else None
            if best is None or err < best[0]:
                best = (err, damping, _snapshot(layer) if len(dampings) > 1 else None)
        if best[2] is not None:
            _restore(layer, best[2])
        fitted_heldout, out["damping"] = best[0], best[1]
    else:
        fitted_heldout = _fit_adam(layer, xf, yf, steps, lr, batch_size, fit_bias, gen, bar, heldout)
    if heldout is not None:
        out["heldout_error_fitted"] = fitted_heldout
        if fitted_heldout >= heldout[2]:  # never worse than magnitude pruning on held-out data
            _restore(layer, magnitude)
            out["choice"] = "magnitude"
    out["error_adaprune"] = _rel_err(_layer_out(layer, xf), yf)
    return out


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
    """Per-layer outcome of :func:`adaprune`. Errors are relative, ``||Y - Y'||^2 / ||Y||^2``:
    ``error_*`` on the calibration samples the fit used, ``heldout_error_*`` on the held-out ones."""

    name: str
    kind: str
    view_shape: tuple[int, int]
    fit: str  # "adam" or "lstsq"
    kept_l1_fraction: float  # of the dense |W| kept by the mask
    error_magnitude: float  # mask applied to the dense weights, no re-fit
    error_adaprune: float  # the layer kept (the re-fit, or the magnitude-pruned weights when choice="magnitude")
    seconds: float
    samples: int = 0  # rows of the fit (samples x positions) after the held-out split
    unknowns_per_row: int = 0  # kept weights (+ bias) of the fullest output row
    ill_posed: bool = False  # samples < unknowns_per_row, or (lstsq) an ill-conditioned input Gram matrix
    damping: float | None = None  # lstsq: ridge towards the magnitude-pruned weights, x mean diag(X^T X)
    heldout_error_magnitude: float | None = None
    heldout_error_fitted: float | None = None
    choice: str = "fitted"  # "fitted", or "magnitude" when the fit was worse on the held-out samples

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
    holdout: float = 0.2,
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
        cached samples, None = all) on the mean squared output error, early-stopped
        on the held-out samples. ``"lstsq"``: closed-form least squares per output
        row over the kept weights, damped towards the magnitude-pruned weights by
        ``ridge`` (or one of :data:`DAMPINGS`, whichever predicts the held-out
        samples best) times the mean of ``diag(X^T X)``; Linear and ``groups=1``
        zero-padded Conv2d layers, others fall back to Adam.
    holdout : float
        Fraction of the calibration samples (a seeded random choice, the same for
        every layer) kept out of the fits to check them: each layer keeps its fit
        only if it predicts these samples better than the magnitude-pruned weights.
        0 turns the check off (then an ill-posed least-squares fit uses damping
        ``max(ridge, 0.01)``).
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
        :class:`AdaPruneLayerReport` (kept L1, error before/after, fit sizes,
        damping, held-out errors, ``choice`` of fitted or magnitude-pruned
        weights); ``.summary()`` a text table.

    Warns
    -----
    UserWarning
        For each layer whose fit is underdetermined: fewer calibration rows
        (samples x positions) than kept weights per output row; with ``holdout=0``
        also for a numerically singular least-squares system.

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
    if not isinstance(holdout, (int, float)) or isinstance(holdout, bool) or not 0 <= holdout < 1:
        raise ValueError(f"holdout must be a fraction in [0, 1), got {holdout!r}")
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
    split = None
    try:
        for name, layer in layers.items():
            t0 = time.perf_counter()
            dense_layer = dense.get_submodule(name)
            xd, y = _capture(dense, name, batches, want_output=True)
            x = _capture(work, name, batches) if sequential else xd
            if split is None:
                split = _holdout_split(len(x), holdout, seed)
            bar_steps = None
            if bar_layers is not None and (fit == "adam" or _lstsq_design(layer, x[:1], y[:1]) is None):
                bar_steps = tqdm(total=steps, desc=name, unit="step", leave=False)
            fields = _fit_layer(name, layer, x, y, split, fit=fit, steps=steps, lr=lr, batch_size=batch_size,
                                ridge=ridge, fit_bias=fit_bias, gen=gen, bar=bar_steps)
            if bar_steps is not None:
                bar_steps.close()
            Wd = np.abs(dense_layer.weight.detach().to("cpu", torch.float64).numpy())
            kept = float((Wd * layer.mask.cpu().numpy()).sum() / Wd.sum()) if Wd.sum() > 0 else 1.0
            reports.append(AdaPruneLayerReport(name=name, kind=type(dense_layer).__name__,
                                               view_shape=layer.view_shape(), kept_l1_fraction=kept,
                                               seconds=time.perf_counter() - t0, **fields))
            if bar_layers is not None:
                bar_layers.set_postfix(err=f"{fields['error_magnitude']:.3g}->{fields['error_adaprune']:.3g}")
                bar_layers.update(1)
    finally:
        if bar_layers is not None:
            bar_layers.close()
    n_bn = reestimate_batchnorm(work, bn_data if bn_data is not None else batches) if reestimate_bn else 0
    work.eval()
    return AdaPruneResult(work, reports, n_bn)
