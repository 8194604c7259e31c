"""GPU peer: entropic optimal transport per tile in torch, then greedy rounding (after TSENOR).

The torch twin of :mod:`.sinkhorn_ot` (same relaxation, same Dykstra sweeps, same rounding), so it
runs wherever its tensors live, e.g. on a GPU, vectorised over all tiles. TSENOR (Meng et al.,
NeurIPS 2025) solves this relaxation on GPUs and rounds it with further refinements that are not
reproduced here; it is written from scratch from the paper's description, no code from TSENOR.

Per tile with magnitudes ``a`` scaled to ``[0, 1]`` by the tile maximum, the plan ``X`` maximises
``<a, X> + eps H(X)`` subject to row and column sums ``n`` and ``0 <= X <= 1``; Dykstra's algorithm
alternates row scaling, column scaling and clipping at 1 (with its correction). The rounding visits
entries by descending ``X`` and keeps one while its tile-row and tile-column hold fewer than ``n``
(all tiles in lockstep: ``m * m`` steps of vector operations over the tiles), so masks satisfy
``keep="at_most"``; rows/columns may be left short.
"""
from __future__ import annotations

from .sinkhorn_ot import EPS, ITERS

__all__ = ["sinkhorn_plan_torch", "greedy_round_torch", "sinkhorn_mask_torch"]


def sinkhorn_plan_torch(tiles, n: int, eps: float = EPS, iters: int = ITERS):
    """Entropic capacity-1 transport plan of a ``(T, m, m)`` float tensor of magnitudes (float32 math)."""
    import torch

    a = tiles.float()
    top = a.amax(dim=(1, 2), keepdim=True)
    top = torch.where(top > 0, top, torch.ones_like(top))
    X = torch.exp((a / top - 1.0) / eps)
    Q = torch.ones_like(X)
    tiny = 1e-30
    for _ in range(iters):
        X *= n / X.sum(dim=2, keepdim=True).clamp_min(tiny)
        X *= n / X.sum(dim=1, keepdim=True).clamp_min(tiny)
        X *= Q
        torch.clamp(X, min=1.0, out=Q)
        X.clamp_(max=1.0)
    return X


def greedy_round_torch(X, n: int):
    """Greedy rounding of ``(T, m, m)`` plans: largest first, kept while its row and column hold < n."""
    import torch

    T, m, _ = X.shape
    order = torch.argsort(X.reshape(T, m * m), dim=1, descending=True, stable=True)
    rows, cols = order // m, order % m
    rowcnt = torch.zeros((T, m), dtype=torch.int32, device=X.device)
    colcnt = torch.zeros((T, m), dtype=torch.int32, device=X.device)
    keep = torch.zeros((T, m * m), dtype=torch.bool, device=X.device)
    for s in range(m * m):
        r, c = rows[:, s : s + 1], cols[:, s : s + 1]
        ok = (rowcnt.gather(1, r) < n) & (colcnt.gather(1, c) < n)
        keep.scatter_(1, order[:, s : s + 1], ok)
        oki = ok.to(torch.int32)
        rowcnt.scatter_add_(1, r, oki)
        colcnt.scatter_add_(1, c, oki)
    return keep.reshape(T, m, m)


def sinkhorn_mask_torch(W, n: int, m: int, eps: float = EPS, iters: int = ITERS):
    """Bool mask of a 2-D tensor whose sides are multiples of ``m`` (``keep="at_most"``), on W's device."""
    R, C = W.shape
    if R % m or C % m:
        raise ValueError(f"sinkhorn_mask_torch needs sides that are multiples of m={m}, got {tuple(W.shape)}")
    tiles = W.detach().abs().reshape(R // m, m, C // m, m).permute(0, 2, 1, 3).reshape(-1, m, m)
    keep = greedy_round_torch(sinkhorn_plan_torch(tiles, n, eps, iters), n)
    return keep.reshape(R // m, C // m, m, m).permute(0, 2, 1, 3).reshape(R, C)
