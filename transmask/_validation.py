"""Input validation shared by every public entry point.

Everything a user can pass wrong is caught here with a message that names the
problem; nothing is silently coerced into a wrong answer.
"""
from __future__ import annotations

import math
import numbers
import operator

import numpy as np

from ._checks import count_nonfinite
from ._threads import kernel_guard

KEEP_MODES = ("exactly", "at_most")


def as_int(value, name: str, minimum: int | None = None, what: str | None = None) -> int:
    """``value`` as a Python int, the one integer check of the package.

    Integers and integer-like objects (numpy integers, 0-d integer arrays,
    anything with ``__index__``) pass; bools, floats (even ``2.0``), complex
    numbers and other types are a TypeError; a value below ``minimum`` is a
    ValueError. ``what`` describes the expected value in both messages
    (default "an integer" / ">= minimum").
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        expected = what or "an integer"
        if isinstance(value, (bool, np.bool_, float, np.floating, complex, np.complexfloating)):
            raise TypeError(f"{name} must be {expected}, got {value!r} of type {type(value).__name__}")
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be {expected}, got {value!r} of type {type(value).__name__}") from None
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {what or f'>= {minimum}'}, got {name}={value}")
    return value


def check_nm(n, m, *, allow_zero: bool = False) -> tuple[int, int]:
    """Return ``(n, m)`` as Python ints after checking ``1 <= n <= m`` (``0 <= n`` with ``allow_zero``)."""
    m = as_int(m, "m", 1, "a positive integer")
    n = as_int(n, "n", 0 if allow_zero else 1,
               f"a {'non-negative' if allow_zero else 'positive'} integer (the number kept of every m)")
    if n > m:
        raise ValueError(f"n must not exceed m (n is the number kept of every m), got n={n} > m={m}")
    return n, m


def check_keep(keep) -> str:
    """``keep`` after checking it is one of ``KEEP_MODES``."""
    if not isinstance(keep, str) or keep not in KEEP_MODES:
        raise ValueError(f"keep must be one of {KEEP_MODES}, got {keep!r}")
    return keep


def check_optimum(optimum) -> float:
    """A kept magnitude given as the optimum: a finite real number >= 0."""
    if isinstance(optimum, (bool, np.bool_)) or not isinstance(optimum, (numbers.Real, np.integer, np.floating)):
        raise TypeError(f"optimum must be a real number (the optimal kept magnitude), got {optimum!r} of type {type(optimum).__name__}")
    value = float(optimum)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"optimum must be a finite number >= 0 (the optimal kept magnitude), got {optimum!r}")
    return value


def _to_numpy(W, name: str) -> np.ndarray:
    # CPU torch tensors: detach (np.asarray refuses tensors that require grad) and
    # widen bfloat16, which numpy has no dtype for. Done by duck typing so that
    # torch is never imported here.
    if type(W).__module__.startswith("torch") and hasattr(W, "detach"):
        t = W.detach()
        device = getattr(t, "device", None)
        if device is not None and device.type == "meta":
            raise TypeError(f"{name} is a torch tensor on the meta device, which holds no values; "
                            "pass a tensor with data on the CPU")
        if device is not None and device.type != "cpu":
            raise TypeError(f"{name} is a torch tensor on {device}; move it to the CPU first (tensor.cpu())")
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
        with kernel_guard():
            bad = count_nonfinite(A)
        if bad:
            raise ValueError(f"{name} contains {bad} NaN or infinite value(s); masks of non-finite weights are undefined")
    return A


def as_mask(mask, name: str = "mask", allow_empty: bool = True) -> np.ndarray:
    """Validate a 2-D boolean (or 0/1) mask and return it as a bool array.

    An empty mask (a side of length 0) is a ValueError unless ``allow_empty``,
    as an empty ``W`` is for :func:`transmask.optimal_mask`.
    """
    A = _to_numpy(mask, name)
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {A.shape}")
    if A.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (shape {A.shape})")
    if A.dtype == np.bool_:
        return A
    if np.issubdtype(A.dtype, np.integer) or np.issubdtype(A.dtype, np.floating):
        if not np.isin(A, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0/1 or booleans")
        return A.astype(bool)
    raise TypeError(f"{name} must be boolean or 0/1, got dtype {A.dtype}")
