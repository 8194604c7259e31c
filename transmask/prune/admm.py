r"""Layer-wise pruning by operator splitting (ADMM) with an exact projection, and least-squares refits on a mask.

For one Linear layer with dense weight :math:`W_0` (``rows x cols``) and
calibration Gram matrix :math:`H = X^\top X`, one-shot pruning solves

.. math::  \min_{W}\ \mathrm{tr}\big((W - W_0) H (W - W_0)^\top\big)
           \quad\text{s.t. the support of } W \text{ is a mask of the structure}.

SparseGPT (:func:`transmask.prune.rules.obs_prune`) fixes the mask of a stripe
of columns greedily, then spreads its error over the columns not visited yet.
:func:`admm_prune` instead optimises mask and weights together, as ALPS does
(X. Meng et al., "ALPS: Improved Optimization for Highly Sparse One-Shot Pruning
for Large Language Models", NeurIPS 2024): split :math:`W = D` with :math:`D`
in the constraint set and iterate, with a penalty :math:`\rho` that grows,

.. math::
    W &\leftarrow (2 W_0 H - V + \rho D)(2H + \rho I)^{-1} \\
    D &\leftarrow \Pi(W + V/\rho) \\
    V &\leftarrow V + \rho (W - D)

where :math:`\Pi` is the Euclidean projection on the structure: keep the
entries of largest square, i.e. the *exact* transposable solver
(:func:`transmask.optimal_mask`) for transposable masks, top ``n`` of ``m`` per
row group for row-wise N:M. Every step sees the whole layer and the full
quadratic loss, so the mask of a column can still change after its neighbours
moved, which a stripe-by-stripe choice cannot do. The problem is first scaled
so that ``diag(H) = 1`` (:math:`W \to W\,\mathrm{diag}(\sqrt{H_{jj}})`, a change
of variables that leaves the loss and the support unchanged), which makes the
projection's saliency :math:`W_{ij}^2 H_{jj}` (Wanda's, squared), and
:math:`(2H + \rho I)^{-1}` costs one eigendecomposition of :math:`H` per layer.
When the support no longer changes, the kept weights get their least-squares
optimum on that support (:func:`refit_on_mask`, conjugate gradients on every
row at once).

:func:`refit_on_mask` alone also serves as a final step after any other rule
(``refit=True`` in :func:`transmask.prune.prune_model`): SparseGPT never moves
a weight once its column is visited, so its kept weights are not the
least-squares optimum for its own mask.
"""
from __future__ import annotations

from .._optional import require
from .rules import damped_gram
from .structures import Structure, select_mask

torch = require("torch", "transmask.prune.admm")

__all__ = ["admm_prune", "refit_on_mask", "scaled_problem"]


def scaled_problem(W, H, damp: float = 0.01):
    r"""The dampened, diagonally scaled problem ``(W0s, Hs, s)``.

    :math:`H_\lambda = H + \lambda I` (:math:`\lambda` = ``damp`` x mean diag,
    inputs that never fire get :math:`H_{jj} = 1`), :math:`s = \sqrt{\mathrm{diag}\,H_\lambda}`,
    ``Hs = H_lambda / (s s^T)`` (unit diagonal), ``W0s = W diag(s)``; all float64.
    """
    H = damped_gram(H, damp)
    s = torch.sqrt(torch.diagonal(H))
    return W.detach().to(torch.float64) * s[None, :], H / s[:, None] / s[None, :], s


def _cg_on_mask(W0s, Hs, mask, X, iters: int, rtol: float):
    """Batched conjugate gradients: every row solves ``(Hs)_KK x_K = (W0s Hs)_K`` on its own support K."""
    m = mask.to(W0s.dtype)
    B = (W0s @ Hs) * m
    X = X * m
    R = B - (X @ Hs) * m
    P = R.clone()
    rs = (R * R).sum(1)
    stop = float(rtol) ** 2 * float((B * B).sum(1).max())
    for _ in range(int(iters)):
        AP = (P @ Hs) * m
        alpha = rs / (P * AP).sum(1).clamp_min(1e-300)
        X = X + alpha[:, None] * P
        R = R - alpha[:, None] * AP
        rs_new = (R * R).sum(1)
        if float(rs_new.max()) <= stop:
            break
        P = R + (rs_new / rs.clamp_min(1e-300))[:, None] * P
        rs = rs_new
    return X


def refit_on_mask(W, H, mask, W_init=None, *, damp: float = 0.01, iters: int = 100, rtol: float = 1e-6):
    r"""Least-squares optimum of the kept weights for a fixed mask.

    Minimises :math:`\mathrm{tr}((W' - W) H_\lambda (W' - W)^\top)` over ``W'``
    with ``W'`` zero off ``mask``, by conjugate gradients on all rows at once
    (diagonally preconditioned), starting from ``W_init`` (e.g. SparseGPT's
    result; default: ``W`` masked).

    Parameters
    ----------
    W : Tensor (rows, cols)
        Dense weight.
    H : Tensor (cols, cols)
        Gram matrix of the calibration inputs.
    mask : bool Tensor (rows, cols)
    W_init : Tensor, optional
    damp : float
        Dampening (fraction of mean diag H), as for SparseGPT.
    iters : int
        Conjugate-gradient steps at most.
    rtol : float
        Stop when every row's residual is below ``rtol`` times the largest right-hand side.

    Returns
    -------
    Tensor (rows, cols), float32, zeros off ``mask``.

    Examples
    --------
    >>> import torch
    >>> X = torch.randn(200, 8, dtype=torch.float64); W = torch.randn(3, 8, dtype=torch.float64)
    >>> mask = torch.rand(3, 8) < 0.5
    >>> Wr = refit_on_mask(W, X.T @ X, mask, damp=0.0).double()
    >>> k = mask[0]; exact = torch.linalg.lstsq(X[:, k], X @ W[0]).solution
    >>> bool(torch.allclose(Wr[0, k], exact, atol=1e-4))
    True
    """
    W0s, Hs, s = scaled_problem(W, H, damp)
    start = (W if W_init is None else W_init).detach().to(torch.float64) * s[None, :]
    Xs = _cg_on_mask(W0s, Hs, mask.to(W0s.device), start, iters, rtol)
    return ((Xs / s[None, :]) * mask).to(torch.float32)


def admm_prune(W, H, structure: Structure, *, damp: float = 0.01, iters: int = 300, rho: float = 0.1,
               growth: float = 1.3, every: int = 3, refit_iters: int = 100):
    r"""Prune one weight by ADMM with an exact projection on the structure, then refit on the mask.

    Parameters
    ----------
    W : Tensor (rows, cols)
        Dense weight (not modified).
    H : Tensor (cols, cols)
        Gram matrix of the calibration inputs.
    structure : Structure
        Any structure; transposable masks are projected with the structure's solver.
    damp : float
        Dampening, fraction of the mean of diag(H).
    iters : int
        ADMM iterations at most (it stops earlier once the mask is stable and
        :math:`\lVert W - D\rVert^2 < 10^{-6}\lVert W_0\rVert^2`).
    rho, growth, every : float, float, int
        Initial penalty (on the unit-diagonal scale) and its growth factor, applied every
        ``every`` iterations.
    refit_iters : int
        Conjugate-gradient steps of the final refit.

    Returns
    -------
    (W_new, mask, saliency0)
        Pruned weight (float32, zeros off the mask), bool mask, and the projection's
        saliency on the dense weight, :math:`W_{ij}^2 H_{jj}`.

    Examples
    --------
    >>> import torch
    >>> from transmask.prune.structures import Structure
    >>> g = torch.Generator().manual_seed(0)
    >>> W = torch.randn(8, 16, generator=g); X = torch.randn(100, 16, generator=g)
    >>> W2, mask, _ = admm_prune(W, X.T @ X, Structure.parse("2:4-T"))
    >>> import transmask as tm; tm.is_transposable(mask.numpy(), 2, 4)
    True
    """
    W0s, Hs, s = scaled_problem(W, H, damp)
    lam, E = torch.linalg.eigh(Hs)
    # float32 for the per-iteration products (they dominate the time); the refit is float64
    E32, lam32 = E.to(torch.float32), lam.to(torch.float32)
    W032 = W0s.to(torch.float32)
    G = 2.0 * (W032 @ Hs.to(torch.float32))
    saliency0 = (W032 * W032)
    per_row = True  # unstructured: every output row keeps the same share (Wanda's comparison group)
    mask = select_mask(saliency0, structure, per_row=per_row)
    D = W032 * mask
    V = torch.zeros_like(W032)
    scale = float((W032 * W032).sum())
    r = float(rho)
    for k in range(int(iters)):
        Wk = (((G - V + r * D) @ E32) / (2.0 * lam32 + r)[None, :]) @ E32.T
        Z = Wk + V / r
        new = select_mask(Z * Z, structure, per_row=per_row)
        changed = int((new != mask).sum())
        mask = new
        D = Z * mask
        V = V + r * (Wk - D)
        if k % every == every - 1:
            r *= growth
        if changed == 0 and k >= 3 * every and float(((Wk - D) ** 2).sum()) < 1e-6 * scale:
            break
    Xs = _cg_on_mask(W0s, Hs, mask, D.to(torch.float64), refit_iters, 1e-6)
    W_new = ((Xs / s[None, :]) * mask).to(torch.float32)
    return W_new, mask, saliency0
