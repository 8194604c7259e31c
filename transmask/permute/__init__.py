"""Channel permutations for transposable N:M masks.

Permuting channels where the network allows it (and the neighbouring layer to
match, so the function is unchanged) regroups which weights share an ``m x m``
tile, so the optimal transposable mask can keep more magnitude.

* :func:`search` -- row and/or column permutations of one matrix;
* :func:`search_coupled` -- one permutation shared by several matrices (the
  rows of some, the columns of others: an MLP's hidden units);
* :func:`permute_named` -- the coupled groups visible from tensor names
  (``mlp.gate_proj/up_proj/down_proj``, ``mlp.fc1/fc2``,
  ``intermediate.dense/output.dense``), searched and applied;
* :mod:`transmask.permute.models` (torch, imported on first use) -- permute
  the free channels of torch models (MLP hidden units, per-head value
  dimensions, conv channels with their BatchNorm, optionally the residual
  stream) without changing their function;
* :mod:`transmask.prune.permute` (torch) -- the same permutations chosen for
  a pruning rule's saliency, before one-shot pruning
  (``transmask.prune.prune_model(permute=...)``, ``transmask prune --permute``).

Only numpy and numba are imported here.

Example
-------
>>> import numpy as np, transmask as tm
>>> W = np.random.default_rng(1).standard_normal((64, 64))
>>> res = tm.permute.search(W, 2, 4)
>>> bool(res.kept >= res.kept_identity)
True
"""
from __future__ import annotations

import importlib

from .named import permute_named
from .search import CoupledPermutationResult, PermutationResult, kept_magnitude, magnitude_order, search, search_coupled

__all__ = [
    "search",
    "search_coupled",
    "permute_named",
    "PermutationResult",
    "CoupledPermutationResult",
    "kept_magnitude",
    "magnitude_order",
    "models",
]


def __getattr__(name: str):
    if name == "models":
        module = importlib.import_module(f"{__name__}.models")
        globals()["models"] = module
        return module
    raise AttributeError(f"module 'transmask.permute' has no attribute {name!r}")
