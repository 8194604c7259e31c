"""The 2-D matrix view of a layer's weight that masks are computed on.

Masks are defined on 2-D matrices cut into ``m x m`` tiles (see
:mod:`transmask.masks`); layer weights map to such a matrix as follows.

``nn.Linear``
    ``weight`` is ``(out_features, in_features)``; the view is the weight itself.
    ``W @ x`` (forward) and ``W.T @ dy`` (backward, input gradient) are then both
    N:M when the mask is transposable.

``nn.Conv2d``
    ``weight`` is ``(out_channels, in_channels // groups, kh, kw)``; the view is
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
"""
from __future__ import annotations

__all__ = ["weight_to_2d", "view_to_weight", "view_shape"]


def view_shape(weight_shape) -> tuple[int, int]:
    """Shape of the 2-D view of a Linear ``(out, in)`` or Conv2d ``(out, cin, kh, kw)`` weight."""
    shape = tuple(int(s) for s in weight_shape)
    if len(shape) == 2:
        return shape
    if len(shape) == 4:
        out, cin, kh, kw = shape
        return out, kh * kw * cin
    raise ValueError(f"expected a 2-D (Linear) or 4-D (Conv2d) weight shape, got {shape}")


def weight_to_2d(weight):
    """2-D view of a Linear or Conv2d weight (torch tensor or numpy array).

    Linear ``(out, in)`` is returned as is; Conv2d ``(out, cin, kh, kw)`` becomes
    ``(out, kh*kw*cin)`` in channels-last order (``weight.permute(0, 2, 3, 1)``
    flattened). The result may be a copy for Conv2d.

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
    if weight.ndim == 4:
        out = weight.shape[0]
        if hasattr(weight, "permute"):  # torch
            return weight.permute(0, 2, 3, 1).reshape(out, -1)
        return weight.transpose(0, 2, 3, 1).reshape(out, -1)
    raise ValueError(f"expected a 2-D (Linear) or 4-D (Conv2d) weight, got {weight.ndim}-D of shape {tuple(weight.shape)}")


def view_to_weight(view, weight_shape):
    """Inverse of :func:`weight_to_2d`: put a 2-D view back into the layer's weight shape."""
    shape = tuple(int(s) for s in weight_shape)
    if tuple(view.shape) != view_shape(shape):
        raise ValueError(f"view of shape {tuple(view.shape)} does not match weight shape {shape} (expected {view_shape(shape)})")
    if len(shape) == 2:
        return view
    out, cin, kh, kw = shape
    v = view.reshape(out, kh, kw, cin)
    if hasattr(v, "permute"):
        return v.permute(0, 3, 1, 2).contiguous()
    return v.transpose(0, 3, 1, 2).copy()
