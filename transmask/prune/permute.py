r"""Channel permutations chosen for a pruning rule, before one-shot pruning (``prune_model(permute=...)``).

:func:`transmask.permute.models.search_model` maximises the kept ``|W|`` of the
optimal transposable masks. A pruning rule does not choose its masks from
``|W|``, so this module searches the same function-preserving permutations (MLP
hidden units; value dimensions inside each KV head) for the kept *saliency of
the rule*, and keeps the calibration statistics consistent with the permuted
weights.

Saliency of a weight ``W`` (``out x in``) with input Gram matrix
:math:`H = X^\top X` (``X``: one row per calibration token), per rule:

* ``"magnitude"``, ``"adaprune"``: :math:`|W_{ij}|` (their masks are of ``|W|``);
* ``"wanda"``: :math:`|W_{ij}|\sqrt{H_{jj}}`, exactly Wanda's saliency;
* ``"sparsegpt"``, ``"admm"``: the optimal-brain-surgeon saliency
  :math:`W_{ij}^2 / [H_\lambda^{-1}]_{jj}` with :math:`H_\lambda = H + \lambda I`
  (``damp`` as in the pruner): the output error of removing that one weight
  while all others compensate. SparseGPT itself divides by the diagonal of the
  Cholesky factor of the inverse in its column order, which changes when the
  columns are permuted; the order-free OBS value is what a permutation can be
  judged by, and it moves with its channel.

Which entries move where: the hidden units of an MLP are the *rows* of
``gate/up_proj`` (whose input, the residual stream, is not permuted: their
saliency rows simply move) and the *columns* of ``down_proj`` (whose input
statistics are permuted with them: :math:`H \to H_{p,p}`); likewise the value
dimensions are rows of ``v_proj`` and columns of ``o_proj``. The per-column
factors above (:math:`H_{jj}`, :math:`[H_\lambda^{-1}]_{jj}`) are invariant
under a symmetric permutation of ``H``, so each saliency entry travels with its
weight and the search's objective is exact for Wanda and for the OBS value.

Every matrix's saliency is divided by its total, so the search maximises the
sum of the layers' kept *fractions* (each layer's relative error counts alike,
whatever its scale). Only transposable structures are searched (the search
solves transposable masks), with the exact solver and ``keep="exactly"``.

Requires torch (``pip install 'transmask[torch]'``).
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

import numpy as np

from .._optional import require
from ..permute.models import _decoder_layers, _mlp_parts, search_model, value_axis_perms
from .rules import damped_gram, wanda_saliency

torch = require("torch", "transmask.prune.permute")

__all__ = ["PermuteOptions", "parse_permute", "rule_saliency", "permute_for_pruning"]

AXES = ("mlp", "values", "mlp+values")


@dataclass(frozen=True)
class PermuteOptions:
    """What ``prune_model(permute=...)`` permutes and the search's budget.

    ``axes``: ``"mlp"`` (hidden units), ``"values"`` (value dims per KV head) or
    ``"mlp+values"``; ``sweeps``/``seed`` as in :func:`transmask.permute.search`.
    """

    axes: str = "mlp+values"
    sweeps: int = 3
    seed: int = 0

    def to_dict(self) -> dict:
        return {"axes": self.axes, "sweeps": self.sweeps, "seed": self.seed}


def parse_permute(permute) -> PermuteOptions | None:
    """``None``/``False`` -> None; ``True`` -> defaults; ``"mlp"``/``"values"``/``"mlp+values"``;
    a dict of :class:`PermuteOptions` fields; or a :class:`PermuteOptions`."""
    if permute is None or permute is False:
        return None
    if permute is True:
        return PermuteOptions()
    if isinstance(permute, PermuteOptions):
        opts = permute
    elif isinstance(permute, str):
        opts = PermuteOptions(axes=permute)
    elif isinstance(permute, dict):
        unknown = set(permute) - {"axes", "sweeps", "seed"}
        if unknown:
            raise ValueError(f"permute: unknown options {sorted(unknown)} (known: axes, sweeps, seed)")
        opts = PermuteOptions(**permute)
    else:
        raise TypeError(f"permute must be None, a bool, one of {AXES}, a dict or PermuteOptions, got {permute!r}")
    if opts.axes not in AXES:
        raise ValueError(f"permute axes must be one of {AXES}, got {opts.axes!r}")
    if isinstance(opts.sweeps, bool) or not isinstance(opts.sweeps, int) or opts.sweeps < 0:
        raise ValueError(f"permute sweeps must be a non-negative int, got {opts.sweeps!r}")
    if isinstance(opts.seed, bool) or not isinstance(opts.seed, int):
        raise TypeError(f"permute seed must be an int, got {opts.seed!r}")
    return opts


def rule_saliency(W, H, rule: str, damp: float = 0.01) -> np.ndarray:
    """The saliency (float64, ``W``'s shape) that the permutation search maximises for ``rule`` (module docstring).

    ``H`` (``in x in``) may be None for ``"magnitude"``/``"adaprune"``.

    Examples
    --------
    >>> import torch
    >>> W, H = torch.tensor([[1.0, -2.0]]), torch.diag(torch.tensor([4.0, 1.0]))
    >>> rule_saliency(W, H, "wanda").tolist()
    [[2.0, 2.0]]
    """
    W = W.detach().double().cpu()
    if rule in ("magnitude", "adaprune"):
        return W.abs().numpy()
    if H is None:
        raise ValueError(f"rule={rule!r}: the permutation search needs calibration statistics")
    H = H.detach().double().cpu()
    if rule == "wanda":
        return wanda_saliency(W, H).numpy()
    if rule in ("sparsegpt", "admm"):
        Hinv_diag = torch.diagonal(torch.linalg.inv(damped_gram(H, damp)))
        return (W**2 / Hinv_diag[None, :]).numpy()
    raise ValueError(f"no saliency for rule {rule!r}")


def _excluded(name: str, exclude) -> bool:
    import fnmatch

    return any(name == pat or fnmatch.fnmatchcase(name, pat) for pat in exclude)


def permute_for_pruning(model, structure, rule: str, options, *, stats=None, calib_ids=None, damp: float = 0.01,
                        adapter=None, batch_size: int = 8, exclude=(), progress: bool = False):
    """Search and apply, in place, the rule-aware function-preserving permutations of a Llama-style model.

    Parameters
    ----------
    model : torch.nn.Module
        A Llama-style decoder (:func:`transmask.permute.models.search_model`).
    structure : transmask.prune.Structure
        Transposable (``kind == "transposable"``); its ``n:m`` is searched.
    rule : str
        The pruning rule (its saliency is the objective; module docstring).
    options : PermuteOptions or anything :func:`parse_permute` takes
    stats : transmask.prune.LayerStats, optional
        Dense calibration statistics. Returned permuted to match the model.
    calib_ids : LongTensor, optional
        Without ``stats``, a rule that needs data collects statistics of the
        dense model from these first (one extra pass; used for the search only).
    damp, adapter, batch_size, exclude, progress
        As in :func:`transmask.prune.prune_model`; excluded layers count zero
        in the objective (they are permuted all the same: the function must not change).

    Returns
    -------
    (record, stats)
        ``record``: a JSON-ready dict (options, objective, kept saliency fractions
        before/after summed over the searched matrices, seconds, and
        ``permutations``: per axis (``<block>.mlp``, ``<block>.self_attn.values.<kv head>``)
        its permutation (new position ``i`` holds old channel ``perm[i]``) and kept values);
        ``stats``: the given ``stats`` with the Gram matrices of the permuted
        inputs (``down_proj``, ``o_proj``) permuted alike, or None.
    """
    from ..prune.adapters import get_adapter
    from .pruner import LayerStats, collect_stats
    from .rules import NEEDS_DATA

    opts = parse_permute(options)
    if getattr(structure, "kind", None) != "transposable":
        raise ValueError(f"permute= searches for transposable N:M masks; structure {structure.label} is not transposable")
    t0 = time.perf_counter()
    adapter = get_adapter(model, adapter)
    blocks = adapter.blocks()
    prefix = getattr(adapter, "block_prefix", lambda i: f"blocks.{i}")
    try:
        _, layers = _decoder_layers(model)
    except TypeError as exc:
        raise TypeError(f"permute= needs a Llama-style decoder: {exc}") from None
    if [id(b) for b in blocks] != [id(b) for b in layers]:
        raise TypeError("permute= needs the adapter's blocks to be the model's decoder layers")
    names = {}
    for bi, block in enumerate(blocks):
        for sub, mod in block.named_modules():
            if isinstance(mod, torch.nn.Linear):
                names[id(mod)] = f"{prefix(bi)}.{sub}"
    search_stats = stats
    if stats is None and rule in NEEDS_DATA and rule != "adaprune":
        if calib_ids is None:
            raise ValueError(f"permute= with rule={rule!r} needs calibration data (calib_ids or stats)")
        search_stats = collect_stats(model, calib_ids, batch_size=batch_size, adapter=adapter, progress=progress)

    searched: set[str] = set()

    def importance(linear):
        name = names.get(id(linear))
        if name is None:
            raise TypeError(f"permute=: a {type(linear).__name__} of the decoder is not a Linear of the pruned blocks")
        searched.add(name)
        if _excluded(name, exclude):
            return np.zeros(tuple(linear.weight.shape))
        H = search_stats.hessian(name) if search_stats is not None and rule not in ("magnitude", "adaprune") else None
        sal = rule_saliency(linear.weight, H, rule, damp)
        total = float(sal.sum())
        return sal / total if total > 0 else sal

    result = search_model(model, structure.n, structure.m, mlp="mlp" in opts.axes, attention_values="values" in opts.axes,
                          sweeps=opts.sweeps, seed=opts.seed, importance=importance)
    # the whole-axis permutation of every permuted input, to carry the statistics along
    column_perms: dict[str, np.ndarray] = {}
    permutations: dict[str, dict] = {}
    value_perms: dict[int, list] = {}
    for key, res in result.entries:
        i = int(re.match(r"layers\.(\d+)\.", key).group(1))
        permutations[f"{prefix(i)}.{key.split('.', 2)[2]}"] = {"perm": res.perm.tolist(), "kept_identity": res.kept_identity,
                                                       "kept": res.kept}
        if key.endswith(".mlp"):
            column_perms[names[id(_mlp_parts(layers[i].mlp)[1])]] = res.perm
        else:
            value_perms.setdefault(i, []).append(res.perm)
    for i, perms in value_perms.items():
        attn = layers[i].self_attn
        column_perms[names[id(attn.o_proj)]] = value_axis_perms(attn, perms)[1]
    new_stats = None
    if stats is not None:
        hessians = dict(stats.hessians)
        for name, p in column_perms.items():
            if name in hessians:
                idx = torch.as_tensor(p, device=hessians[name].device)
                hessians[name] = hessians[name].index_select(0, idx).index_select(1, idx).contiguous()
        new_stats = LayerStats(hessians, stats.tokens)
    # each matrix's saliency sums to 1 and its slices (value heads) tile it, so the sums below are sums of the
    # searched matrices' kept fractions under their optimal transposable masks
    record = {**opts.to_dict(), "objective": f"kept fraction of the {rule} saliency (summed over the searched matrices)",
              "structure": f"{structure.n}:{structure.m}-T", "solver": "exact", "matrices": len(searched),
              "kept_identity": result.kept_identity, "kept": result.kept, "seconds": time.perf_counter() - t0,
              "permutations": permutations}
    if progress:
        print(f"permute: kept {rule} saliency {result.kept_identity:.4f} -> {result.kept:.4f} (sum of fractions over "
              f"{record['matrices']} matrices), {record['seconds']:.0f} s", file=sys.stderr, flush=True)
    return record, new_stats
