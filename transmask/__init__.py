"""transmask: exact and approximate N:M *transposable* sparsity masks.

A mask is N:M when every group of ``m`` consecutive entries of a row keeps at
most ``n`` (``n`` is the number *kept*, as in NVIDIA's "2:4 keeps 2 of 4").
It is *transposable* N:M when inside every ``m x m`` tile every tile-row and
every tile-column keeps ``n`` (``keep="exactly"``) or at most ``n``
(``keep="at_most"``); then ``mask`` and ``mask.T`` are both N:M, so the
forward product ``W @ X`` and the backward product ``W.T @ dY`` can both run
on sparse hardware.

Quick start
-----------
>>> import numpy as np, transmask as tm
>>> W = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
>>> mask = tm.optimal_mask(W, 2, 4)               # exact, min-cost flow per tile
>>> bool(tm.is_transposable(mask, 2, 4))
True
>>> approx = tm.optimal_mask(W, 2, 4, method="approx")   # the paper's 2-approximation
>>> bool(tm.kept_l1(W, approx) <= tm.kept_l1(W, mask) + 1e-3)
True

Only numpy and numba are imported here; the optional parts (``lp`` via pulp,
``sparse``/``kernels`` via torch and triton, ``training`` via torch, plots via
matplotlib) import their dependency when first used.

Reference: I. Hubara, B. Chmiel, M. Island, R. Banner, S. Naor, D. Soudry,
"Accelerated Sparse Neural Training: A Provable and Efficient Method to Find
N:M Transposable Masks", NeurIPS 2021.
"""
from __future__ import annotations

import importlib

from . import _cli_startup

_cli_startup.guard()  # the `transmask` command only: Ctrl-C during the imports below is one line, exit 130

# Before anything loads Numba: a passive OpenMP wait policy, Numba's own pool when
# torch loaded libgomp first, and a lock for threaded callers of that pool (see _threads).
from . import _threads  # noqa: E402, F401

from . import masks  # noqa: E402
from .masks import *  # noqa: E402, F401, F403  (the public API: optimal_mask, nm_mask, is_nm, ... see masks.__all__)

__version__ = "0.1.0"

__all__ = [*masks.__all__, "diversity", "sparse", "kernels", "training", "__version__"]

# Submodules loaded on first attribute access, so ``import transmask`` stays light.
_LAZY_SUBMODULES = {"diversity", "sparse", "kernels", "training", "cli", "demo", "permute", "prune"}


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'transmask' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY_SUBMODULES)
