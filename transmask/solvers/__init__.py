"""Solver registry for :func:`transmask.optimal_mask`.

Each solver is one module exposing ``solve(A, n, m, keep) -> bool ndarray``,
where ``A`` is a validated C-contiguous float32/float64 matrix (signs allowed;
solvers use magnitudes), ``1 <= n < m`` and ``keep`` is ``"exactly"`` or
``"at_most"``. Adding a solver is one module plus one line in ``REGISTRY``.
Modules are imported on first use, so optional dependencies (pulp) load lazily.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class SolverSpec:
    name: str
    module: str  # module under transmask.solvers that defines ``solve``
    description: str


REGISTRY: dict[str, SolverSpec] = {
    spec.name: spec
    for spec in (
        SolverSpec("exact", "exact", "optimal: min-cost flow (successive shortest paths) per m x m tile, Numba, tiles in parallel"),
        SolverSpec("approx", "approx", "the paper's greedy 2-approximation per tile (>= 1/2 of optimal), Numba, rows/columns filled to n"),
        SolverSpec("lp", "lp", "optimal: linear program per tile in pulp (CBC); slow reference for small inputs"),
    )
}

SolveFn = Callable[[np.ndarray, int, int, str], np.ndarray]


def module(method):
    """The module of a registered solver (imported on first use), or ValueError naming the choices."""
    if not isinstance(method, str) or method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(REGISTRY)}")
    return importlib.import_module(f"{__name__}.{REGISTRY[method].module}")


def get(method) -> SolveFn:
    """The ``solve`` function of a registered solver, or ValueError naming the choices."""
    return module(method).solve
