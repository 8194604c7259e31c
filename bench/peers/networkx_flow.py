"""Exact peer: ``networkx.min_cost_flow`` per ``m x m`` tile (the paper's reference approach).

The reference code of Hubara et al. (NeurIPS 2021) solves every block with
``networkx.min_cost_flow`` (network simplex). Per tile: tile-row nodes have
demand ``-n`` (they supply ``n``), tile-column nodes demand ``+n``, and every entry
is an edge row -> column with capacity 1 and weight ``-q_ij``, so full tiles keep
exactly ``n`` per tile-row and tile-column. Tiles cut by the matrix edge (and
``keep="at_most"``) get a source/sink with row/column capacities
``min(n, real entries)`` and a zero-weight bypass edge, so they keep at most ``n``.

networkx's network simplex is only reliable with integer weights, so the
magnitudes are quantised exactly as in :mod:`.ortools_flow`
(``round(|w| * 2**30 / max_tile |w|)``): optimal up to that quantisation.
"""
from __future__ import annotations

import numpy as np

from ._tiles import per_tile_mask
from .ortools_flow import quantise

__all__ = ["solve_tile", "networkx_mask"]


def solve_tile(a: np.ndarray, n: int, exactly: bool = True) -> np.ndarray:
    """Optimal mask of one tile ``a`` (shape ``(r, c)``); see :func:`.ortools_flow.solve_tile`."""
    import networkx as nx

    r, c = a.shape
    q = quantise(a).tolist()
    G = nx.DiGraph()
    full = exactly and r == c and n <= r
    if full:
        for i in range(r):
            G.add_node(("r", i), demand=-n)
        for j in range(c):
            G.add_node(("c", j), demand=n)
    else:
        nr, nc = min(n, c), min(n, r)
        total = r * nr
        G.add_node("s", demand=-total)
        G.add_node("t", demand=total)
        G.add_edge("s", "t", capacity=total, weight=0)
        for i in range(r):
            G.add_edge("s", ("r", i), capacity=nr, weight=0)
        for j in range(c):
            G.add_edge(("c", j), "t", capacity=nc, weight=0)
    for i in range(r):
        qi = q[i]
        for j in range(c):
            G.add_edge(("r", i), ("c", j), capacity=1, weight=-qi[j])
    flow = nx.min_cost_flow(G)
    out = np.zeros((r, c), dtype=bool)
    for i in range(r):
        fi = flow[("r", i)]
        for j in range(c):
            out[i, j] = fi[("c", j)] > 0
    return out


def networkx_mask(W, n: int, m: int, keep: str = "exactly") -> np.ndarray:
    """Optimal transposable mask of ``W`` (bool), one ``networkx.min_cost_flow`` per tile."""
    return per_tile_mask(W, n, m, keep, solve_tile)
