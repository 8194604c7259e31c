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
import os
import sys

from . import _cli_startup

_cli_startup.guard()  # the `transmask` command only: Ctrl-C during the imports below is one line, exit 130

# Numba's OpenMP pool and PyTorch's share libgomp. With OpenMP's default (active)
# wait policy the idle threads of one spin and starve the other: on a 2-core
# machine PyTorch ops after a mask computation ran ~100x slower (0.04 ms -> 8 ms
# for a 32k-element sqrt). Passive waiting costs nothing measurable for our
# coarse parallel loops. The variable is only read when libgomp loads, so it is
# set here, before numba or torch can load it; an explicit user setting wins.
# If torch (hence libgomp) was loaded first, it is too late for that: then
# Numba's own thread pool ("workqueue") is used instead of OpenMP, unless the
# user chose a threading layer.
_libgomp_maybe_loaded = "torch" in sys.modules
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

if _libgomp_maybe_loaded and "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

from .masks import (  # noqa: E402
    available_methods,
    is_nm,
    is_transposable,
    kept_l1,
    mask_stats,
    nm_mask,
    optimal_mask,
    tile_kept_l1,
)

__version__ = "0.1.0"

__all__ = [
    "optimal_mask",
    "nm_mask",
    "is_nm",
    "is_transposable",
    "kept_l1",
    "mask_stats",
    "tile_kept_l1",
    "available_methods",
    "diversity",
    "sparse",
    "kernels",
    "training",
    "__version__",
]

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
