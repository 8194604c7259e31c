"""Input validation shared by every public entry point.

Everything a user can pass wrong is caught here with a message that names the
problem; nothing is silently coerced into a wrong answer.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

KEEP_MODES = ("exactly", "at_most")


def check_nm(n, m) -> tuple[int, int]:
    """Return ``(n, m)`` as Python ints after checking ``1 <= n <= m``."""
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            try:  # accept integer-like objects such as 0-d integer arrays
                if isinstance(value, (bool, np.bool_, float, np.floating)):
                    raise TypeError
                operator.index(value)
            except TypeError:
                raise TypeError(f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}") from None
    n, m = operator.index(n), operator.index(m)
    if m < 1:
        raise ValueError(f"m must be a positive integer, got m={m}")
    if n < 1:
        raise ValueError(f"n must be a positive integer (the number kept of every m), got n={n}")
    if n > m:
        raise ValueError(f"n must not exceed m (n is the number kept of every m), got n={n} > m={m}")
    return n, m


def check_keep(keep) -> str:
    if not isinstance(keep, str) or keep not in KEEP_MODES:
        raise ValueError(f"keep must be one of {KEEP_MODES}, got {keep!r}")
    return keep


def _to_numpy(W, name: str) -> np.ndarray:
    # CPU torch tensors: detach (np.asarray refuses tensors that require grad) and
    # widen bfloat16, which numpy has no dtype for. Done by duck typing so that
    # torch is never imported here.
    if type(W).__module__.startswith("torch") and hasattr(W, "detach"):
        t = W.detach()
        if getattr(t, "device", None) is not None and t.device.type != "cpu":
            raise TypeError(f"{name} is a torch tensor on {t.device}; move it to the CPU first (tensor.cpu())")
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    if isinstance(W, np.ndarray):
        return W
    try:
        return np.asarray(W)
    except Exception as exc:  # ragged lists, strange objects
        raise TypeError(f"{name} could not be converted to a numeric array: {exc}") from exc


def as_weight_matrix(W, name: str = "W", check_finite: bool = True) -> np.ndarray:
    """Validate a 2-D real weight matrix and return it as float32/float64.

    float32 and float64 C-contiguous arrays pass through without a copy; other
    real dtypes (float16, integers) are converted, other layouts made contiguous.
    The input is never modified.
    """
    A = _to_numpy(W, name)
    dt = A.dtype
    if dt == np.bool_:
        raise TypeError(f"{name} has dtype bool; pass weights (or importances), not a mask")
    if np.issubdtype(dt, np.complexfloating):
        raise TypeError(f"{name} has complex dtype {dt}; magnitudes of complex weights are ambiguous, pass np.abs({name}) explicitly")
    if not (np.issubdtype(dt, np.floating) or np.issubdtype(dt, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {dt}")
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, cols), got {A.ndim}-D array of shape {A.shape}; reshape conv weights first")
    if A.size == 0:
        raise ValueError(f"{name} is empty (shape {A.shape})")
    if dt == np.float16 or np.issubdtype(dt, np.integer) and dt.itemsize <= 2:
        A = A.astype(np.float32)
    elif np.issubdtype(dt, np.integer) or (np.issubdtype(dt, np.floating) and dt not in (np.float32, np.float64)):
        A = A.astype(np.float64)  # int32/int64/longdouble: float64 keeps the order of magnitudes
    if not A.flags.c_contiguous:
        A = np.ascontiguousarray(A)
    if check_finite:
        from ._checks import count_nonfinite

        bad = count_nonfinite(A)
        if bad:
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s); masks of non-finite weights are undefined")
    return A


def as_mask(mask, name: str = "mask") -> np.ndarray:
    """Validate a 2-D boolean (or 0/1) mask and return it as a bool array."""
    A = _to_numpy(mask, name)
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {A.shape}")
    if A.dtype == np.bool_:
        return A
    if np.issubdtype(A.dtype, np.integer) or np.issubdtype(A.dtype, np.floating):
        if not np.isin(A, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0/1 or booleans")
        return A.astype(bool)
    raise TypeError(f"{name} must be boolean or 0/1, got dtype {A.dtype}")
