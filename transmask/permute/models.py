"""Apply channel permutations to torch models without changing their function.

Where a channel axis is produced by one layer and read by the next with only
unit-wise operations between them, any permutation of it (applied to both
sides) leaves the network's output unchanged, while regrouping the ``m x m``
tiles of both layers' weights (:mod:`transmask.permute.search`). This module
finds those axes in torch models and permutes them in place:

=====================================  ===========================================================
free axis                              permuted tensors
=====================================  ===========================================================
MLP hidden units (Llama-style)         rows of ``gate_proj``, ``up_proj`` (+ biases); columns of ``down_proj``
MLP hidden units (``fc1``/``fc2``)     rows of ``fc1`` (+ bias); columns of ``fc2``
value dims inside each KV head         rows of ``v_proj`` in the head (+ bias); columns of ``o_proj`` in
                                       every query head that reads that KV head (GQA: one permutation
                                       per KV head, shared by its query heads)
conv channels between two convs        ``conv1`` output channels (+ bias), BatchNorm running mean/var,
                                       weight and bias; ``conv2`` input channels
residual stream (optional, global)     embedding columns, every RMSNorm/LayerNorm weight (and bias),
                                       columns of every layer that reads the stream (q/k/v, gate/up,
                                       an untied LM head), rows (+ bias) of every layer that writes it
                                       (o_proj, down_proj)
=====================================  ===========================================================

Query/key head dimensions are left alone (RoPE pairs them by frequency).
RMSNorm and LayerNorm are permutation-equivariant (their statistics are over
the whole vector), which is what makes the residual permutation free.

Search and apply in one call with :func:`search_model` (Llama-style decoder
models, e.g. ``transformers.LlamaForCausalLM``) or :func:`search_conv_pair`;
the ``permute_*`` functions apply a given permutation.

Requires torch (``pip install 'transmask[torch]'``).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from .._optional import require
from ..views import weight_to_2d
from .search import CoupledPermutationResult, search_coupled

torch = require("torch", "transmask.permute.models")

__all__ = [
    "permute_mlp",
    "permute_attention_values",
    "permute_conv_pair",
    "permute_residual",
    "search_model",
    "search_conv_pair",
    "ModelPermutation",
]


def _index(perm, device) -> "torch.Tensor":
    p = torch.as_tensor(np.asarray(perm, dtype=np.int64), device=device)
    return p


def _check_perm(perm, size: int, what: str) -> np.ndarray:
    p = np.asarray(perm)
    if p.ndim != 1 or p.shape[0] != size or not np.array_equal(np.sort(p), np.arange(size)):
        raise ValueError(f"{what}: expected a permutation of range({size}), got an array of shape {p.shape}")
    return p.astype(np.int64)


@torch.no_grad()
def _permute_param(param, perm: np.ndarray, dim: int) -> None:
    if param is None:
        return
    param.data = param.data.index_select(dim, _index(perm, param.device)).contiguous()


def _mlp_parts(mlp):
    """(producers, consumer) of an MLP module: Llama-style gate/up/down or fc1/fc2; None when neither."""
    if all(hasattr(mlp, k) for k in ("gate_proj", "up_proj", "down_proj")):
        return [mlp.gate_proj, mlp.up_proj], mlp.down_proj
    if hasattr(mlp, "fc1") and hasattr(mlp, "fc2"):
        return [mlp.fc1], mlp.fc2
    return None


def permute_mlp(mlp, perm) -> None:
    """Permute the hidden units of an MLP in place (Llama ``gate/up/down_proj`` or ``fc1``/``fc2``).

    New hidden unit ``i`` is old unit ``perm[i]``: rows (and biases) of the
    producing layers and columns of ``down_proj``/``fc2`` are reordered; the
    MLP's output is unchanged.
    """
    parts = _mlp_parts(mlp)
    if parts is None:
        raise TypeError(f"{type(mlp).__name__} has neither gate_proj/up_proj/down_proj nor fc1/fc2")
    producers, consumer = parts
    p = _check_perm(perm, consumer.weight.shape[1], "permute_mlp")
    for layer in producers:
        _permute_param(layer.weight, p, 0)
        _permute_param(getattr(layer, "bias", None), p, 0)
    _permute_param(consumer.weight, p, 1)


def _attention_geometry(attn):
    head_dim = getattr(attn, "head_dim", None)
    if head_dim is None:
        config = getattr(attn, "config", None)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = attn.v_proj.weight.shape[0] // head_dim
    heads = attn.o_proj.weight.shape[1] // head_dim
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads evenly")
    return head_dim, heads, kv_heads


def value_axis_perms(attn, perms) -> tuple[np.ndarray, np.ndarray]:
    """The whole-axis permutations that per-KV-head value permutations ``perms`` make:
    ``(rows of v_proj, columns of o_proj)`` (see :func:`permute_attention_values`)."""
    head_dim, heads, kv_heads = _attention_geometry(attn)
    if len(perms) != kv_heads:
        raise ValueError(f"expected {kv_heads} permutations (one per KV head), got {len(perms)}")
    group = heads // kv_heads
    v_perm = np.concatenate([h * head_dim + _check_perm(p, head_dim, f"value head {h}") for h, p in enumerate(perms)])
    o_perm = np.concatenate([q * head_dim + np.asarray(perms[q // group], dtype=np.int64) for q in range(heads)])
    return v_perm, o_perm


def permute_attention_values(attn, perms) -> None:
    """Permute the value dimensions inside each KV head of an attention module, in place.

    ``perms[h]`` permutes the ``head_dim`` value dimensions of KV head ``h``:
    rows of ``v_proj`` in that head (and its bias) and the matching columns of
    ``o_proj`` in every query head that reads KV head ``h`` (with grouped-query
    attention, query heads ``h*g ... h*g+g-1`` for ``g = heads // kv_heads``).
    Attention weights do not depend on the values' order, so the output is unchanged.
    """
    v_perm, o_perm = value_axis_perms(attn, perms)
    _permute_param(attn.v_proj.weight, v_perm, 0)
    _permute_param(getattr(attn.v_proj, "bias", None), v_perm, 0)
    _permute_param(attn.o_proj.weight, o_perm, 1)


def permute_conv_pair(conv1, conv2, perm, bn=None) -> None:
    """Permute the channels between two convolutions in place (``conv1`` -> [``bn``] -> unit-wise ops -> ``conv2``).

    Output channels of ``conv1`` (weight and bias), the BatchNorm's running
    mean/variance, weight and bias, and input channels of ``conv2``. Grouped
    convolutions (``groups > 1``) are refused: their channels are not free.
    """
    for conv in (conv1, conv2):
        if getattr(conv, "groups", 1) != 1:
            raise ValueError(f"{type(conv).__name__} has groups={conv.groups}; only groups=1 channels can be permuted freely")
    p = _check_perm(perm, conv1.weight.shape[0], "permute_conv_pair")
    if conv2.weight.shape[1] != p.shape[0]:
        raise ValueError(f"conv1 has {p.shape[0]} output channels but conv2 reads {conv2.weight.shape[1]}")
    _permute_param(conv1.weight, p, 0)
    _permute_param(getattr(conv1, "bias", None), p, 0)
    if bn is not None:
        for name in ("weight", "bias"):
            _permute_param(getattr(bn, name, None), p, 0)
        for name in ("running_mean", "running_var"):
            buf = getattr(bn, name, None)
            if buf is not None:
                buf.copy_(buf.index_select(0, _index(p, buf.device)))
    _permute_param(conv2.weight, p, 1)


def _decoder_layers(model):
    """The decoder layers of a Llama-style model (``model.model.layers`` or ``model.layers``)."""
    for owner in (getattr(model, "model", None), model):
        layers = getattr(owner, "layers", None)
        if layers is not None:
            return owner, list(layers)
    raise TypeError(f"{type(model).__name__} has no .layers / .model.layers (expected a Llama-style decoder)")


def _residual_parts(model):
    """Readers (columns), writers (rows), norms and embeddings of the residual stream of a Llama-style model."""
    owner, layers = _decoder_layers(model)
    readers, writers, norms = [], [], []
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        readers += [attn.q_proj, attn.k_proj, attn.v_proj]
        writers += [attn.o_proj]
        producers, consumer = _mlp_parts(mlp)
        readers += producers
        writers += [consumer]
        norms += [m for m in layer.children() if _is_norm(m)]
    final = getattr(owner, "norm", None)
    if final is not None:
        norms.append(final)
    embed = getattr(owner, "embed_tokens", None)
    head = getattr(model, "lm_head", None)
    return readers, writers, norms, embed, head


def _is_norm(module) -> bool:
    name = type(module).__name__.lower()
    return ("rmsnorm" in name or "layernorm" in name) and hasattr(module, "weight")


def permute_residual(model, perm) -> None:
    """Permute the residual stream of a Llama-style decoder in place (one permutation, the whole model).

    Embedding columns, every norm's weight (and bias), columns of every layer
    that reads the stream (q/k/v, gate/up, an untied LM head) and rows (+ bias)
    of every layer that writes it (o_proj, down_proj). The logits are unchanged.
    """
    readers, writers, norms, embed, head = _residual_parts(model)
    p = _check_perm(perm, readers[0].weight.shape[1], "permute_residual")
    for layer in readers:
        _permute_param(layer.weight, p, 1)
    for layer in writers:
        _permute_param(layer.weight, p, 0)
        _permute_param(getattr(layer, "bias", None), p, 0)
    for norm in norms:
        _permute_param(norm.weight, p, 0)
        _permute_param(getattr(norm, "bias", None), p, 0)
    if embed is not None:
        _permute_param(embed.weight, p, 1)
    if head is not None and (embed is None or head.weight is not embed.weight):  # a tied head follows the embedding
        _permute_param(head.weight, p, 1)


def _np(weight) -> np.ndarray:
    return weight.detach().float().cpu().numpy()


@dataclass
class ModelPermutation:
    """What :func:`search_model` did: one entry per permuted axis, in model order.

    ``entries`` holds ``(name, result)`` pairs, ``result`` a
    :class:`~transmask.permute.CoupledPermutationResult` (kept magnitudes summed
    over the tensors of that axis). ``kept_identity``/``kept`` sum them (tensors
    shared by two axes, e.g. ``o_proj`` with the residual, count once per axis).
    """

    n: int
    m: int
    entries: list = field(default_factory=list)

    @property
    def kept_identity(self) -> float:
        return float(sum(r.kept_identity for _, r in self.entries))

    @property
    def kept(self) -> float:
        return float(sum(r.kept for _, r in self.entries))

    @property
    def seconds(self) -> float:
        return float(sum(r.seconds for _, r in self.entries))


def search_model(model, n: int, m: int, *, mlp: bool = True, attention_values: bool = True, residual: bool = False,
                 sweeps: int = 6, seed: int = 0, progress: bool = False, importance=None) -> ModelPermutation:
    """Search and apply, in place, the free channel permutations of a Llama-style decoder model.

    Each free axis is searched with :func:`transmask.permute.search_coupled`
    over the weights that it touches (kept magnitude of their optimal
    transposable ``n:m`` masks) and applied at once, so later searches see the
    permuted model. Order: residual stream (if asked), then per layer the value
    dimensions of each KV head and the MLP hidden units. The model computes the
    same function afterwards (up to floating-point rounding).

    Parameters
    ----------
    model : torch.nn.Module
        E.g. ``transformers.LlamaForCausalLM`` (anything with ``.model.layers``
        or ``.layers`` whose items have ``self_attn.{q,k,v,o}_proj`` and an
        ``mlp`` with ``gate/up/down_proj`` or ``fc1/fc2``).
    n, m : int
        The transposable N:M pattern the masks will use.
    mlp, attention_values, residual : bool
        Which axes to permute. The residual stream is one permutation for the
        whole model, searched over every block's matrices at once: on a 135M
        model that is a stack of ~180k rows (about 1.3 GB of tables at 2:4) and
        far slower than the per-block axes, hence off by default.
    sweeps, seed, progress
        As in :func:`transmask.permute.search`.
    importance : callable, optional
        ``importance(linear) -> array`` of the linear's weight shape, non-negative:
        what the search maximises the kept sum of, instead of ``|W|`` (e.g. the
        saliency a pruning rule will use, :mod:`transmask.prune.permute`). It is
        called on each axis's linears right before that axis is searched; its
        entries must belong to their weights (they move with the permuted rows
        and columns).

    Returns
    -------
    ModelPermutation
    """
    result = ModelPermutation(n, m)
    if importance is None:
        def importance(linear):
            return np.abs(_np(linear.weight))
    else:
        user = importance

        def importance(linear):
            value = np.asarray(user(linear), dtype=np.float64)
            if value.shape != tuple(linear.weight.shape):
                raise ValueError(f"importance gave shape {value.shape} for a weight of shape {tuple(linear.weight.shape)}")
            return value
    _, layers = _decoder_layers(model)
    if residual:
        readers, writers, _, _, _ = _residual_parts(model)
        res = search_coupled([importance(w) for w in writers], [importance(r) for r in readers], n=n, m=m, sweeps=sweeps,
                             seed=seed, progress=progress)
        permute_residual(model, res.perm)
        result.entries.append(("residual", res))
    for i, layer in enumerate(layers):
        if attention_values:
            attn = layer.self_attn
            head_dim, heads, kv_heads = _attention_geometry(attn)
            group = heads // kv_heads
            v, o = importance(attn.v_proj), importance(attn.o_proj)
            perms = []
            for h in range(kv_heads):
                res = search_coupled([v[h * head_dim:(h + 1) * head_dim]],
                                     [o[:, q * head_dim:(q + 1) * head_dim] for q in range(h * group, (h + 1) * group)],
                                     n=n, m=m, sweeps=sweeps, seed=seed)
                perms.append(res.perm)
                result.entries.append((f"layers.{i}.self_attn.values.{h}", res))
            permute_attention_values(attn, perms)
        if mlp and _mlp_parts(layer.mlp) is not None:
            producers, consumer = _mlp_parts(layer.mlp)
            res = search_coupled([importance(p) for p in producers], [importance(consumer)], n=n, m=m, sweeps=sweeps,
                                 seed=seed)
            permute_mlp(layer.mlp, res.perm)
            result.entries.append((f"layers.{i}.mlp", res))
        if progress:
            gained = [r for name, r in result.entries if name.startswith(f"layers.{i}.")]
            print(f"layer {i}: kept {sum(r.kept_identity for r in gained):.6g} -> {sum(r.kept for r in gained):.6g}",
                  file=sys.stderr, flush=True)
    return result


def search_conv_pair(conv1, conv2, n: int, m: int, *, bn=None, sweeps: int = 6, seed: int = 0) -> CoupledPermutationResult:
    """Search and apply, in place, the channel permutation between two convolutions.

    The objective is the kept magnitude of both convs' optimal transposable
    masks on their 2-D views (:func:`transmask.views.weight_to_2d`: channels-last,
    so ``conv2``'s input channels are the columns of each kernel position's block).
    """
    if getattr(conv1, "groups", 1) != 1 or getattr(conv2, "groups", 1) != 1:
        raise ValueError("only convolutions with groups=1 have freely permutable channels")
    w1 = weight_to_2d(_np(conv1.weight))
    cin = conv2.weight.shape[1]
    w2 = weight_to_2d(_np(conv2.weight))
    blocks = [w2[:, k * cin:(k + 1) * cin] for k in range(w2.shape[1] // cin)]
    res = search_coupled([w1], blocks, n=n, m=m, sweeps=sweeps, seed=seed)
    permute_conv_pair(conv1, conv2, res.perm, bn=bn)
    return res
