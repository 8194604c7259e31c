r"""LP reference solver (pulp + CBC): the same problem stated as a linear program.

.. math::

    \max \sum_{ij} |W_{ij}| x_{ij} \quad \text{s.t.} \quad
    \sum_{j \in \text{tile-row}} x_{ij} \;(=|\le)\; n, \quad
    \sum_{i \in \text{tile-col}} x_{ij} \;(=|\le)\; n, \quad 0 \le x_{ij} \le 1

with ``=`` for full tiles under ``keep="exactly"`` and ``<=`` otherwise. The
constraint matrix of each tile is the incidence matrix of a bipartite graph,
hence totally unimodular, so the LP optimum is integral; the variables are
declared binary anyway so that CBC returns an integral vertex. Written
independently of the flow code, it is the oracle the tests check the Numba
solvers against, and the slow peer in the benches. Meant for small inputs.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._optional import require

MAX_ENTRIES = 512 * 512


def solve(A: np.ndarray, n: int, m: int, keep: str, time_limit: float | None = None) -> np.ndarray:
    """Optimal transposable mask by linear programming (see :func:`transmask.optimal_mask`)."""
    pulp = require("pulp", 'optimal_mask(..., method="lp")')
    if A.size > MAX_ENTRIES:
        raise ValueError(
            f'method="lp" is a reference for small inputs (at most {MAX_ENTRIES} entries), got shape {A.shape}; '
            'use method="exact", which gives the same optimum much faster'
        )
    R, C = A.shape
    absA = np.abs(A.astype(np.float64))
    prob = pulp.LpProblem("transposable_nm_mask", pulp.LpMaximize)
    if hasattr(prob, "add_variable"):  # pulp >= 3.3 (the 4.0 API)
        x = [[prob.add_variable(f"x_{i}_{j}", 0, 1, cat="Binary") for j in range(C)] for i in range(R)]
    else:  # pragma: no cover - older pulp
        x = [[pulp.LpVariable(f"x_{i}_{j}", cat="Binary") for j in range(C)] for i in range(R)]
    prob += pulp.lpSum(float(absA[i, j]) * x[i][j] for i in range(R) for j in range(C))
    for i0 in range(0, R, m):
        for j0 in range(0, C, m):
            rows = range(i0, min(i0 + m, R))
            cols = range(j0, min(j0 + m, C))
            full = len(rows) == m and len(cols) == m
            for i in rows:
                expr = pulp.lpSum(x[i][j] for j in cols)
                prob += (expr == n) if (full and keep == "exactly") else (expr <= n)
            for j in cols:
                expr = pulp.lpSum(x[i][j] for i in rows)
                prob += (expr == n) if (full and keep == "exactly") else (expr <= n)
    with warnings.catch_warnings():
        # pulp 3.x announces that the bundled CBC moves to an extra in pulp 4.0
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit)
        status = prob.solve(solver)
    if pulp.LpStatus[status] != "Optimal":
        raise RuntimeError(f"LP solver finished with status {pulp.LpStatus[status]!r}")
    out = np.zeros((R, C), dtype=bool)
    for i in range(R):
        for j in range(C):
            out[i, j] = (x[i][j].value() or 0.0) > 0.5
    return out
