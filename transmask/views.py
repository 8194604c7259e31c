"""The 2-D matrix view of a layer's weight that masks are computed on.

Masks are defined on 2-D matrices cut into ``m x m`` tiles (see
:mod:`transmask.masks`); layer weights map to such a matrix as follows.

``nn.Linear``
    ``weight`` is ``(out_features, in_features)``; the view is the weight itself.
    ``W @ x`` (forward) and ``W.T @ dy`` (backward, input gradient) are then both
    N:M when the mask is transposable.

``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d``
    ``weight`` is ``(out_channels, in_channels // groups, *kernel)``; for Conv2d
    ``(out, cin, kh, kw)`` the view is
    ``(out_channels, kh * kw * in_channels // groups)`` in **channels-last** order:
    column ``(i * kw + j) * cin + c`` holds ``weight[:, c, i, j]``. This is the
    implicit-GEMM matrix of a channels-last (NHWC) convolution, the layout sparse
    tensor cores use (as NVIDIA's ASP does), so every group of ``m`` consecutive
    columns is ``m`` consecutive input channels at one kernel position, and the
    ``m x m`` tiles pair ``m`` output channels with ``m`` input channels. The
    transposed view ``(kh*kw*cin, out)`` is the GEMM of the input gradient
    (the transposed convolution), so transposable masks make that one N:M too.
    For ``in_channels // groups`` not a multiple of ``m``, groups run across
    kernel positions (the matrix is simply cut into tiles from ``(0, 0)``).
    Conv1d and Conv3d weights follow the same rule: the input channel is the
    fastest-varying column index, kernel positions in C order above it.

This module needs neither torch nor any other optional dependency: the same
functions serve the command line (numpy arrays from checkpoints), the training
path (torch tensors) and the paper figures.
"""
from __future__ import annotations

import math

__all__ = ["weight_to_2d", "view_to_weight", "view_shape"]


def view_shape(weight_shape) -> tuple[int, int]:
    """Shape of the 2-D view of a Linear ``(out, in)`` or conv ``(out, cin, *kernel)`` weight."""
    shape = tuple(int(s) for s in weight_shape)
    if len(shape) == 2:
        return shape
    if len(shape) >= 3:
        out, cin, kernel = shape[0], shape[1], shape[2:]
        return out, cin * math.prod(kernel)
    raise ValueError(f"expected a 2-D (Linear) or >= 3-D (conv) weight shape, got {shape}")


def weight_to_2d(weight):
    """2-D view of a Linear or conv weight (torch tensor or numpy array).

    Linear ``(out, in)`` is returned as is; a conv weight ``(out, cin, *kernel)``
    becomes ``(out, prod(kernel) * cin)`` in channels-last order (for Conv2d
    ``weight.permute(0, 2, 3, 1)`` flattened). The result may be a copy for convs.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.arange(2 * 3 * 1 * 2).reshape(2, 3, 1, 2)   # (out, cin, kh, kw)
    >>> weight_to_2d(w)[0]                                 # position (0,0): c=0,1,2 then (0,1)
    array([0, 2, 4, 1, 3, 5])
    >>> bool((view_to_weight(weight_to_2d(w), w.shape) == w).all())
    True
    """
    if weight.ndim == 2:
        return weight
    if weight.ndim >= 3:
        out = weight.shape[0]
        channels_last = (0, *range(2, weight.ndim), 1)
        if hasattr(weight, "permute"):  # torch
            return weight.permute(*channels_last).reshape(out, -1)
        return weight.transpose(channels_last).reshape(out, -1)
    raise ValueError(f"expected a 2-D (Linear) or >= 3-D (conv) weight, got {weight.ndim}-D of shape {tuple(weight.shape)}")


def view_to_weight(view, weight_shape):
    """Inverse of :func:`weight_to_2d`: put a 2-D view back into the layer's weight shape."""
    shape = tuple(int(s) for s in weight_shape)
    if tuple(view.shape) != view_shape(shape):
        raise ValueError(f"view of shape {tuple(view.shape)} does not match weight shape {shape} (expected {view_shape(shape)})")
    if len(shape) == 2:
        return view
    out, cin, kernel = shape[0], shape[1], shape[2:]
    v = view.reshape(out, *kernel, cin)
    channels_first = (0, v.ndim - 1, *range(1, v.ndim - 1))
    if hasattr(v, "permute"):
        return v.permute(*channels_first).contiguous()
    return v.transpose(channels_first).copy()
