r"""Exact transposable N:M masks of torch tensors, computed on the tensor's device (Triton kernels).

:func:`optimal_mask_torch` is :func:`transmask.optimal_mask` for a ``torch.Tensor``:
on a CUDA tensor the mask is computed by Triton kernels on the GPU and returned
there (no copy to the host); on a CPU tensor it is the Numba solver's mask, or,
when Triton's interpreter is on (``TRITON_INTERPRET=1`` before the kernels are
first imported), the same kernels run on the CPU (how the tests check them).

Design (why Triton, and how it stays exact)
-------------------------------------------
Every ``m x m`` tile is an independent maximum-weight b-matching; the kernels
give each program a block of tiles held in registers as a ``[tiles, m, m]``
block, so one program does in block operations what the CPU kernel does in SIMD
lanes, with no intermediate tensor in GPU memory: the matrix is read once and
the mask written once. Batched torch operations would need a kernel launch and a
pass over memory per operation, and the repair is a loop of data-dependent
length (a few hundred small steps per tile), so Triton it is.

* ``m <= 4``, ``keep="exactly"``: the 16 magnitudes of a tile times the 0/1
  matrix of every valid pattern (90 for 2:4) in one ``tl.dot`` (fp32 FMA,
  ``input_precision="ieee"``) score all patterns; the best one's bits are read
  from a table.
* otherwise: three rounds of dual coordinate ascent give column prices, each row
  keeps its top-n at the prices (optimal for the rows; the prices are valid
  potentials), and successive shortest paths repair over-full columns, in
  lockstep for the tiles of a block (:mod:`._kernels`). ``keep="at_most"`` keeps
  the exactly-n optimum where LP duality proves it at-most optimal, and solves
  the other tiles (and tiles cut by the matrix edge) by a circulation from the
  plain row top-n, as the CPU solver does.

Exactness: the search is exact; its arithmetic is float32 for float16, bfloat16
and float32 inputs (float64 for float64), on tiles scaled by a power of two so
that their largest magnitude is in [1, 2) (exact, and no overflow or subnormal
trouble up to float32's largest values). The kept magnitude of every tile equals
the CPU solver's (which sums in float64) up to a few float32 roundings of the
tile's sum; masks differ only between tiles' equally good optima.
"""
from __future__ import annotations

import os

import numpy as np

from ..._optional import require
from ..._validation import check_keep, check_nm

__all__ = ["optimal_mask_torch", "DEVICE_METHODS"]

#: Methods the device kernels implement; others run on the host (see :func:`optimal_mask_torch`).
DEVICE_METHODS = ("exact",)
#: Largest m the device kernels take (a 64 x 64 tile is one program of 8 warps); larger m run on the host.
DEVICE_MAX_M = 64


def _interpreting() -> bool:
    """True when Triton's interpreter is on, so that the kernels can run on CPU tensors."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return False
    from . import _kernels

    return _kernels.INTERPRET


def _as_solver_input(W, torch):
    """Validated, detached 2-D float tensor (float16/bfloat16/float32/float64) on W's device."""
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"W must be a torch.Tensor, got {type(W).__name__}; use transmask.optimal_mask for arrays")
    A = W.detach()
    if A.device.type == "meta":
        raise TypeError("W is a torch tensor on the meta device, which holds no values; pass a tensor with data")
    dt = A.dtype
    if dt == torch.bool:
        raise TypeError("W has dtype torch.bool; pass weights (or importances), not a mask")
    if dt.is_complex:
        raise TypeError(f"W has complex dtype {dt}; magnitudes of complex weights are ambiguous, pass W.abs() explicitly")
    if A.ndim != 2:
        raise ValueError(f"W must be 2-D (rows, cols), got {A.ndim}-D tensor of shape {tuple(A.shape)}; reshape conv weights first")
    if A.numel() == 0:
        raise ValueError(f"W is empty (shape {tuple(A.shape)})")
    if not dt.is_floating_point:
        # as the host path: small integers exactly in float32, wider ones in float64
        A = A.to(torch.float32 if dt.itemsize <= 2 else torch.float64)
    elif dt not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        A = A.to(torch.float32)  # e.g. float8 formats: float32 holds them exactly
    finite = torch.isfinite(A).all()
    if not bool(finite):
        bad = int((~torch.isfinite(A)).sum())
        raise ValueError(f"W contains {bad} NaN or infinite value(s); masks of non-finite weights are undefined")
    return A


def optimal_mask_torch(W, n: int, m: int, method: str = "exact", keep: str = "exactly"):
    r"""Transposable N:M mask of a torch tensor that keeps the most magnitude, on the tensor's device.

    Same problem, conventions and answer as :func:`transmask.optimal_mask`: every
    ``m x m`` tile keeps exactly (``keep="exactly"``) or at most (``"at_most"``)
    ``n`` per tile-row and tile-column, maximising :math:`\sum |W| \cdot mask`;
    tiles cut by the matrix edge keep at most ``n`` among their real entries.

    Parameters
    ----------
    W : torch.Tensor, shape (rows, cols)
        float16, bfloat16, float32 or float64 (integers are converted as by
        :func:`transmask.optimal_mask`), any strides, on a CUDA device or the CPU.
        Not modified; autograd is not involved (the mask is not differentiable).
    n, m : int
        Keep ``n`` of every ``m`` (``1 <= n <= m``).
    method : str
        ``"exact"`` (default) runs on the device (for ``m <= 64``). Any other
        registered method (see :func:`transmask.available_methods`) runs on the
        host: ``W`` is copied there and the mask copied back. (The greedy
        ``"approx"`` visits a tile's m*m entries one after the other; on a GPU
        that costs more than the exact solver, so there is no device version.)
    keep : {"exactly", "at_most"}

    Returns
    -------
    mask : torch.BoolTensor, shape (rows, cols), on ``W.device``

    Raises
    ------
    TypeError
        ``W`` is not a tensor, or is boolean or complex; ``n``/``m`` not integers.
    ValueError
        ``W`` not 2-D, empty, or holding NaN/inf; ``n``/``m`` out of range; unknown
        ``method`` or ``keep``.
    ImportError
        Triton is missing (needed for CUDA tensors): ``pip install 'transmask[triton]'``.

    Notes
    -----
    On a GPU the kernels read ``W`` once and write the mask once; the only
    transfers to the host are two scalars (the finiteness check and the solver's
    status), so the call synchronises with the device.

    Examples
    --------
    >>> import torch, transmask as tm
    >>> from transmask.solvers.gpu import optimal_mask_torch
    >>> W = torch.tensor([[10., 10, .1], [10, 10, .1], [.1, .1, .1]])
    >>> optimal_mask_torch(W, 2, 3).sum(dim=1)
    tensor([2, 2, 2])
    >>> round(tm.kept_l1(W.numpy(), optimal_mask_torch(W, 2, 3, keep="at_most").numpy()), 1)
    40.1
    """
    torch = require("torch", "optimal_mask on torch tensors")
    from ... import solvers

    n, m = check_nm(n, m)
    keep = check_keep(keep)
    solvers.get(method)  # ValueError naming the choices
    A = _as_solver_input(W, torch)
    if n == m:
        return torch.ones(A.shape, dtype=torch.bool, device=A.device)
    on_device = A.device.type == "cuda" or (A.device.type == "cpu" and _interpreting())
    if method not in DEVICE_METHODS or m > DEVICE_MAX_M or not on_device:
        from ...masks import optimal_mask

        host = A.cpu()
        if host.dtype == torch.bfloat16:
            host = host.float()  # numpy has no bfloat16
        mask = optimal_mask(host.numpy(), n, m, method=method, keep=keep)
        return torch.from_numpy(np.ascontiguousarray(mask)).to(A.device)
    require("triton", "optimal_mask on CUDA tensors")
    from . import _kernels

    mask, failures = _kernels.solve(A, n, m, keep)
    if int(failures.item()):
        raise RuntimeError(f"device solver: {int(failures.item())} tile(s) found no augmenting path (a bug; please report "
                           "it with the matrix); tm.optimal_mask(W.cpu().numpy(), ...) gives the mask on the host")
    return mask
