"""Exact peer: OR-tools ``SimpleMinCostFlow``, one small flow network per ``m x m`` tile.

For every tile (the formulation of Hubara et al., NeurIPS 2021, and of transmask's
exact solver): tile-rows supply ``n`` units, tile-columns demand ``n``, and every
entry is an arc row -> column of capacity 1 and cost ``-q_ij``. With these node
supplies every full tile keeps *exactly* ``n`` per tile-row and tile-column
(``keep="exactly"``), and the minimum-cost flow is the maximum-magnitude mask.
Tiles cut by the matrix edge (and ``keep="at_most"``) use a source -> row (cap
``min(n, real columns)``), column -> sink (cap ``min(n, real rows)``) network with a
zero-cost source -> sink bypass arc, so rows/columns may keep fewer.

Integer costs. OR-tools needs integer costs, so magnitudes are quantised per
tile: ``q_ij = round(|w_ij| * 2**COST_BITS / max_tile |w|)``, with
``COST_BITS = 30``. The mask is exactly optimal for ``q``; against the real
magnitudes it is optimal up to that quantisation (it can lose at most
``n*m * 2**-(COST_BITS+1) * max_tile |w|`` of kept magnitude, far below float32
resolution), and ties (equal ``q``) are broken by OR-tools, not by index.

Everything per tile goes through the vectorised OR-tools calls
(``add_arcs_with_capacity_and_unit_cost``, ``set_nodes_supplies``, ``flows``),
so the Python overhead per tile is a handful of calls; it is still a per-tile
Python loop, which is why the bench times it on a sample of tiles.
"""
from __future__ import annotations

import numpy as np

from ._tiles import per_tile_mask

__all__ = ["COST_BITS", "quantise", "solve_tile", "ortools_mask"]

COST_BITS = 30


def quantise(a: np.ndarray, bits: int = COST_BITS) -> np.ndarray:
    """Integer costs ``round(|a| * 2**bits / max|a|)`` (int64); all zeros for an all-zero tile."""
    a = np.abs(np.asarray(a, dtype=np.float64))
    top = a.max() if a.size else 0.0
    if top <= 0.0:
        return np.zeros(a.shape, dtype=np.int64)
    return np.rint(a * (float(2**bits) / top)).astype(np.int64)


_ARCS: dict[tuple[int, int, bool], tuple[np.ndarray, ...]] = {}


def _arcs(r: int, c: int, bypass: bool):
    """Cached (tails, heads) of the row -> column arcs (and source/sink arcs) of an r x c tile network."""
    key = (r, c, bypass)
    if key not in _ARCS:
        rows = np.repeat(np.arange(r, dtype=np.int32), c)
        cols = r + np.tile(np.arange(c, dtype=np.int32), r)
        if bypass:
            s, t = r + c, r + c + 1
            tails = np.concatenate([rows, np.full(r, s), r + np.arange(c), [s]]).astype(np.int32)
            heads = np.concatenate([cols, np.arange(r), np.full(c, t), [t]]).astype(np.int32)
        else:
            tails, heads = rows, cols
        _ARCS[key] = (tails, heads)
    return _ARCS[key]


def solve_tile(a: np.ndarray, n: int, exactly: bool = True) -> np.ndarray:
    """Optimal mask of one tile ``a`` (shape ``(r, c)``): exactly ``n`` per row/column when
    ``exactly`` and the tile is square with ``n <= r`` (a full tile), else at most ``min(n, ...)``."""
    from ortools.graph.python import min_cost_flow

    r, c = a.shape
    q = quantise(a)
    smcf = min_cost_flow.SimpleMinCostFlow()
    full = exactly and r == c and n <= r
    tails, heads = _arcs(r, c, bypass=not full)
    if full:
        smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, np.ones(r * c, dtype=np.int64), -q.reshape(-1))
        smcf.set_nodes_supplies(np.arange(r + c), np.concatenate([np.full(r, n), np.full(c, -n)]))
    else:
        nr, nc = min(n, c), min(n, r)
        total = r * nr
        caps = np.concatenate([np.ones(r * c), np.full(r, nr), np.full(c, nc), [total]]).astype(np.int64)
        costs = np.concatenate([-q.reshape(-1), np.zeros(r + c + 1, dtype=np.int64)])
        smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
        smcf.set_node_supply(r + c, total)
        smcf.set_node_supply(r + c + 1, -total)
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        raise RuntimeError(f"OR-tools min-cost flow failed with status {status}")
    flows = smcf.flows(np.arange(r * c))
    return (flows > 0).reshape(r, c)


def ortools_mask(W, n: int, m: int, keep: str = "exactly") -> np.ndarray:
    """Optimal transposable mask of ``W`` (bool), one OR-tools min-cost flow per tile."""
    return per_tile_mask(W, n, m, keep, solve_tile)
