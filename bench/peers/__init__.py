"""Peer solvers for transposable N:M masks, written here for the benches (``bench/solvers.py``).

Every peer is a function ``fn(W, n, m) -> bool ndarray`` shaped like ``W`` that
works on ``|W|`` tile by tile (``m x m`` tiles from ``(0, 0)``; ``n`` = number kept).
:data:`PEERS` maps a name to a :class:`Peer` record:

- ``exact``: the peer returns an optimal mask (up to its documented quantisation);
- ``keep``: the counting mode its masks satisfy: ``"exactly"`` (every full tile keeps
  exactly ``n`` per tile-row/column) or ``"at_most"`` (rows/columns may be short);
- ``per_tile``: ``True`` when it runs a Python loop over tiles, so the bench times it
  on a sample of tiles and extrapolates to the full matrix; ``False`` when it is
  vectorised over all tiles and can be timed on the full matrix.

Peers: ``ortools`` (OR-tools SimpleMinCostFlow per tile), ``networkx``
(networkx.min_cost_flow per tile, the paper's reference approach),
``numpy_greedy`` (the paper's greedy 2-approximation, vectorised over tiles),
``sinkhorn`` (entropic OT with capacity 1 + greedy rounding, after TSENOR).
Their heavy dependencies (ortools, networkx) are imported when first called.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .networkx_flow import networkx_mask
from .numpy_greedy import greedy_mask
from .ortools_flow import ortools_mask
from .sinkhorn_ot import sinkhorn_mask

__all__ = ["Peer", "PEERS", "ortools_mask", "networkx_mask", "greedy_mask", "sinkhorn_mask"]


@dataclass(frozen=True)
class Peer:
    name: str
    fn: Callable[[np.ndarray, int, int], np.ndarray]
    exact: bool
    keep: str
    per_tile: bool
    description: str


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("ortools", ortools_mask, exact=True, keep="exactly", per_tile=True,
             description="OR-tools SimpleMinCostFlow per tile (integer costs, 30-bit per-tile quantisation)"),
        Peer("networkx", networkx_mask, exact=True, keep="exactly", per_tile=True,
             description="networkx.min_cost_flow (network simplex) per tile, the paper's reference approach"),
        Peer("numpy_greedy", greedy_mask, exact=False, keep="at_most", per_tile=False,
             description="the paper's greedy 2-approximation, numpy-vectorised over tiles (rows may stay short)"),
        Peer("sinkhorn", sinkhorn_mask, exact=False, keep="at_most", per_tile=False,
             description="entropic OT with capacity 1 (Dykstra, eps=0.05, 50 sweeps) + greedy rounding, after TSENOR"),
    )
}
