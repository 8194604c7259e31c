"""``torch.autograd.Function`` for a Linear layer whose weight has a transposable N:M mask.

Forward ``Y = X @ W.T`` and the input gradient ``dX = dY @ W`` both run the
sparse kernel (:func:`transmask.kernels.nm_matmul`): the first reads ``W``
compressed along ``in_features``, the second ``W.T`` compressed along
``out_features``. Both forms come from the one transposable mask
(:func:`transmask.sparse.compress_transposable`); only the forward values are a
parameter, the backward values are gathered from them at every backward pass
(``R * K * n / m`` reads, small next to the GEMM), so an optimizer step on the
forward values is all it takes to keep both forms in step.

The weight gradient ``dW = dY.T @ X`` is a dense GEMM (an SDDMM kernel that
computes only the kept entries would save the other ``1 - n/m``; not done here),
gathered at the kept positions; padding slots get an exact 0 gradient so they
stay 0 under any optimizer whose update of a zero gradient with zero state is 0
(SGD, Adam, AdamW with weight decay on a 0 value).
"""
from __future__ import annotations

import torch

from ..sparse import TransposableNM
from .nm_kernel import nm_matmul

__all__ = ["TransposableNMLinearFunction", "transposable_nm_linear"]


class TransposableNMLinearFunction(torch.autograd.Function):
    """``y = x @ W.T`` with ``W`` given by forward values and a :class:`TransposableNM` layout.

    ``apply(x2d, values, fwd_indices, bwd_indices, backward_from_forward, forward_columns, R, K, n, m)``
    with ``x2d`` of shape ``(T, K)`` and ``values`` of shape ``(R, ceil(K/m) * n)`` in ``x``'s dtype.
    """

    @staticmethod
    def forward(ctx, x, values, fwd_indices, bwd_indices, backward_from_forward, forward_columns, R, K, n, m):
        y = nm_matmul(x, values, fwd_indices, K, n, m)
        ctx.save_for_backward(x, values, bwd_indices, backward_from_forward, forward_columns)
        ctx.dims = (R, K, n, m)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, values, bwd_indices, b2f, fcols = ctx.saved_tensors
        R, K, n, m = ctx.dims
        dx = dvalues = None
        if ctx.needs_input_grad[0]:
            # backward values = forward values re-gathered in W.T's slot order (0 for padding)
            flat = torch.cat([values.reshape(-1), values.new_zeros(1)])
            dx = nm_matmul(dy, flat[b2f], bwd_indices, R, n, m)
        if ctx.needs_input_grad[1]:
            gw = dy.t() @ x  # (R, K), dense
            padded = gw.new_zeros((R, fcols.shape[1] // n * m + 1))
            padded[:, :K] = gw
            dvalues = torch.gather(padded, 1, fcols)
        return dx, dvalues, None, None, None, None, None, None, None, None


def transposable_nm_linear(x: torch.Tensor, values: torch.Tensor, layout: TransposableNM, bias: torch.Tensor | None = None):
    """Functional sparse Linear: ``x @ W.T + bias`` with ``W`` = ``values`` under ``layout``.

    Parameters
    ----------
    x : torch.Tensor, shape (..., K)
    values : torch.Tensor, shape like ``layout.forward.values``
        The forward values (a parameter); cast to ``x.dtype`` if needed.
    layout : TransposableNM
        Index tensors on ``x``'s device (``layout.forward.values`` is not read).
    bias : torch.Tensor, shape (R,), optional
    """
    R, K = layout.forward.shape
    n, m = layout.forward.n, layout.forward.m
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y = TransposableNMLinearFunction.apply(
        x2, values.to(x.dtype), layout.forward.indices, layout.backward.indices,
        layout.backward_from_forward, layout.forward_columns, R, K, n, m,
    )
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*lead, R)
