r"""Per-layer pruning rules: which weights to drop and how to update the rest.

Every rule sees one Linear weight ``W`` (``rows x cols`` = out x in) and the Gram
matrix of its calibration inputs :math:`H = X^\top X` (``X``: one row per token,
``cols`` features), and returns the pruned weight (dense, zeros off the mask) and
the mask.

* ``"magnitude"``: saliency :math:`|W_{ij}|`; no update.
* ``"wanda"``: saliency :math:`|W_{ij}|\,\lVert X_j\rVert_2 = |W_{ij}| \sqrt{H_{jj}}`
  (Sun et al. 2024); no update. Unstructured masks compare within each output row
  (Wanda's comparison group).
* ``"sparsegpt"``: optimal-brain-surgeon reconstruction with the mask held fixed
  (Frantar & Alistarh 2023). With :math:`H_\lambda = H + \lambda I`,
  :math:`\lambda` = ``damp`` (default 1 %) times the mean of :math:`\mathrm{diag}\,H`,
  and :math:`U` the upper Cholesky factor of :math:`H_\lambda^{-1}`, the columns are
  visited left to right; column :math:`j`'s pruned entries are removed and the
  error :math:`e = (w_j - q_j)/U_{jj}` is spread over the columns not yet visited,
  :math:`W_{:,k} \mathrel{-}= e\,U_{jk}` (lazily, per block of ``blocksize``
  columns, as SparseGPT does). The mask of a group of columns is chosen from the
  OBS saliency :math:`W_{ij}^2 / U_{jj}^2` of the *current* (already updated)
  weights right before those columns are visited: per stripe of ``m`` columns for
  N:M (for transposable masks the stripe is a column of ``m x m`` tiles, solved with
  the transposable solver), per block of ``blocksize`` columns for unstructured
  masks (SparseGPT's adaptive mask selection). ``mask_scope="layer"`` instead chooses
  the whole layer's mask up front from the dense weights' OBS saliency.
* ``"adaprune"``: the mask of :math:`|W|`, then the kept weights re-fitted by
  least squares to reproduce the dense layer's output on the calibration inputs
  (:func:`transmask.training.adaprune`, ``fit="lstsq"``); N:M structures only, and it
  needs the inputs themselves, not only :math:`H`.

The output reconstruction error reported for every rule is
:math:`\lVert (W - W')X^\top\rVert_F / \lVert W X^\top\rVert_F
= \sqrt{\mathrm{tr}(\Delta W H \Delta W^\top) / \mathrm{tr}(W H W^\top)}`.
"""
from __future__ import annotations

from .._optional import require
from .structures import Structure, select_mask

torch = require("torch", "transmask.prune")

RULES = ("magnitude", "wanda", "sparsegpt", "admm", "adaprune")
#: Rules that need calibration inputs.
NEEDS_DATA = {"wanda", "sparsegpt", "admm", "adaprune"}


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return rule


def relative_output_error(W, W_new, H) -> float:
    """:math:`\\lVert (W - W')X^\\top\\rVert_F / \\lVert W X^\\top\\rVert_F` from the Gram matrix ``H = X^T X``."""
    # float32 products, float64 sums: a report figure, and the products dominate the pruning time otherwise
    W = W.float()
    D = W - W_new.float()
    H = H.float()
    num = float(((D @ H) * D).double().sum())
    den = float(((W @ H) * W).double().sum())
    if den <= 0:
        return 0.0 if num <= 0 else float("inf")
    return max(num, 0.0) ** 0.5 / den**0.5


def kept_fraction(saliency, mask) -> float:
    """Share of the total saliency that the mask keeps."""
    total = float(saliency.double().sum())
    return float(saliency.double()[mask].sum()) / total if total > 0 else 1.0


def wanda_saliency(W, H):
    """:math:`|W_{ij}| \\lVert X_j\\rVert_2` with the input norms from ``diag(H)``."""
    return W.abs() * torch.sqrt(torch.clamp(torch.diagonal(H), min=0)).to(W.dtype)[None, :]


def damped_gram(H, damp: float = 0.01):
    """:math:`H_\\lambda = H + \\lambda I` in float64, :math:`\\lambda` = ``damp`` x mean diag(H), after inputs that
    never fire (``H_jj = 0``) get ``H_jj = 1``: the Gram matrix every OBS-style rule (SparseGPT, ADMM, their
    permutation saliency) works with."""
    H = H.detach().to(torch.float64).clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    H += float(damp) * float(torch.diagonal(H).mean()) * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return H


def inverse_hessian_factor(H, damp: float = 0.01):
    """Upper Cholesky factor ``U`` of :math:`(H + \\lambda I)^{-1}` (:func:`damped_gram`).

    If the Cholesky factorisation fails, the dampening is raised tenfold (up to three times).
    """
    for attempt in range(4):
        Hd = damped_gram(H, damp * (10.0**attempt))
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0:
                return U
    raise ValueError("the calibration Gram matrix is not positive definite even with 1000x the dampening")


def _choose(W_part, d_part, structure: Structure, per_row: bool = False):
    """Mask of a column group from its OBS saliency W^2 / d^2."""
    return select_mask(W_part**2 / (d_part[None, :] ** 2), structure, per_row=per_row)


ORDERS = ("natural", "act")


def column_order(H, structure: Structure):
    """Column visiting order for ``order="act"``: groups of ``m`` columns (whole tile stripes;
    single columns for unstructured masks) by descending input energy ``sum diag(H)``.

    OBS spreads a pruned weight's error only over the columns visited *after* it, so
    the columns with the largest activations (outlier features, which a transposable
    mask forces to lose ``m - n`` of every ``m`` weights) go first, when every other
    column can still absorb their error (GPTQ's "act-order", kept stripe-aligned so the
    tiles do not change).
    """
    diag = torch.diagonal(H).double()
    g = structure.m if structure.kind != "unstructured" else 1
    groups = torch.argsort(diag.reshape(-1, g).sum(1), descending=True, stable=True)
    return (groups[:, None] * g + torch.arange(g)[None, :]).reshape(-1)


def obs_prune(W, H, structure: Structure, *, damp: float = 0.01, blocksize: int = 128, mask_scope: str = "stripe",
              U=None, order: str = "natural"):
    """SparseGPT-style OBS pruning of one weight with the mask fixed before each column's update.

    Parameters
    ----------
    W : Tensor (rows, cols)
        Dense weight (not modified).
    H : Tensor (cols, cols)
        Gram matrix of the calibration inputs, :math:`X^\\top X`.
    structure : Structure
    damp : float
        Dampening, as a fraction of the mean of ``diag(H)``.
    blocksize : int
        Columns per lazy batch update (a multiple of ``m``).
    mask_scope : {"stripe", "layer"}
        ``"stripe"``: choose each group's mask from the updated weights just before
        its columns are visited (for unstructured masks, per block of ``blocksize``
        columns); ``"layer"``: choose the whole mask from the dense weights up front.
    U : Tensor (cols, cols), optional
        :func:`inverse_hessian_factor` of ``H`` (of ``H`` permuted to ``order``) if
        already computed (layers that share an input share it).
    order : {"natural", "act"}
        Visit the columns left to right, or by :func:`column_order` (largest input
        energy first, whole stripes of ``m`` columns).

    Returns
    -------
    (W_new, mask, saliency0)
        Pruned weight (float32, zeros off the mask), bool mask, and the dense
        weights' OBS saliency ``W^2 / U_jj^2`` (for the kept-saliency report).
    """
    if mask_scope not in ("stripe", "layer"):
        raise ValueError(f"mask_scope must be 'stripe' or 'layer', got {mask_scope!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "act":
        perm = column_order(H, structure)
        inv = torch.argsort(perm)
        W_new, mask, sal = obs_prune(W[:, perm], H[perm][:, perm], structure, damp=damp, blocksize=blocksize,
                                     mask_scope=mask_scope, U=U)
        return W_new[:, inv], mask[:, inv], sal[:, inv]
    rows, cols = W.shape
    group = structure.m if structure.kind != "unstructured" else blocksize
    if blocksize % group:
        raise ValueError(f"blocksize={blocksize} must be a multiple of m={group}")
    U = (inverse_hessian_factor(H, damp) if U is None else U).to(torch.float32)
    d = torch.diagonal(U)
    W = W.detach().to(torch.float32).clone()
    saliency0 = W**2 / d[None, :] ** 2
    mask = torch.zeros((rows, cols), dtype=torch.bool)
    per_row = False
    if mask_scope == "layer":
        mask = select_mask(saliency0, structure, per_row=per_row)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if mask_scope == "stripe" and i % group == 0:
                j = min(i + group, i2 - i1)
                mask[:, i1 + i:i1 + j] = _choose(W1[:, i:j], d[i1 + i:i1 + j], structure, per_row)
            w = W1[:, i]
            q = torch.where(mask[:, i1 + i], w, torch.zeros((), dtype=w.dtype))
            err = (w - q) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        if i2 < cols:
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    W[~mask] = 0.0
    return W, mask, saliency0


def adaprune_layer(weight, bias, X, structure: Structure, *, ridge: float = 1e-4):
    """Mask of ``|W|`` and a least-squares re-fit on inputs ``X`` (rows = tokens), via
    :func:`transmask.training.adaprune`. Returns (W_new, mask)."""
    if structure.kind == "unstructured":
        raise ValueError("rule='adaprune' supports N:M structures only (it uses transmask.training.adaprune)")
    from ..training import adaprune

    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    method = structure.method if isinstance(structure.method, str) else "exact"
    if not isinstance(structure.method, str):
        raise ValueError("rule='adaprune' takes a solver name as method, not a callable")
    # adaprune() walks a model's layers, so the single layer goes in a container
    result = adaprune(torch.nn.Sequential(layer), X, structure.n, structure.m, transposable=structure.kind == "transposable",
                      method=method, keep=structure.keep, fit="lstsq", ridge=ridge, fit_bias=False,
                      sequential=False, reestimate_bn=False, progress=False)
    fitted = result.model[0]
    mask = fitted.mask.detach().to(torch.bool).cpu()
    W_new = (fitted.weight.detach().float() * mask).cpu()
    return W_new, mask


def prune_weight(weight, H, structure: Structure, rule: str, *, damp: float = 0.01, blocksize: int = 128,
                 mask_scope: str = "stripe", X=None, bias=None, U=None, order: str = "natural", refit: bool = False):
    """Prune one weight by ``rule``; returns (W_new, mask, saliency on the dense weight).

    ``U``: the inverse-Hessian factor for ``"sparsegpt"`` when already computed for ``H``.
    ``refit``: give the kept weights their least-squares optimum on the mask afterwards
    (:func:`transmask.prune.admm.refit_on_mask`; needs ``H``)."""
    W_new, mask, sal = _prune_weight(weight, H, structure, rule, damp=damp, blocksize=blocksize,
                                     mask_scope=mask_scope, X=X, bias=bias, U=U, order=order)
    if refit:
        if H is None:
            raise ValueError("refit=True needs calibration data")
        from .admm import refit_on_mask

        W_new = refit_on_mask(weight, H, mask, W_new, damp=damp)
    return W_new, mask, sal


def _prune_weight(weight, H, structure: Structure, rule: str, *, damp, blocksize, mask_scope, X, bias, U, order):
    rule = check_rule(rule)
    W = weight.detach().to(torch.float32)
    if rule == "magnitude":
        sal = W.abs()
        mask = select_mask(sal, structure)
        return W * mask, mask, sal
    if H is None:
        raise ValueError(f"rule={rule!r} needs calibration data")
    if rule == "wanda":
        sal = wanda_saliency(W, H)
        mask = select_mask(sal, structure, per_row=True)
        return W * mask, mask, sal
    if rule == "sparsegpt":
        W_new, mask, sal = obs_prune(W, H, structure, damp=damp, blocksize=blocksize, mask_scope=mask_scope,
                                      U=U, order=order)
        return W_new, mask, sal
    if rule == "admm":
        from .admm import admm_prune

        return admm_prune(W, H, structure, damp=damp)
    if X is None:
        raise ValueError("rule='adaprune' needs the layer's calibration inputs")
    W_new, mask = adaprune_layer(W, bias, X, structure)
    return W_new, mask, W.abs()
