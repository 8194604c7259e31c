"""Which tensors of a checkpoint are matmul weights, the ones N:M sparsity can speed up.

Sparse tensor cores accelerate matrix products: the weights of Linear layers
(2-D) and of convolutions (3-D to 5-D, seen as matrices through
:mod:`transmask.views`). By default everything else is skipped, each with a
category and a reason:

* not floating point, fewer than 2 or more than 5 dimensions (biases, norms, counters);
* in a state dict (dotted names), tensors whose name does not end in ``weight``
  (buffers and parameters such as GPT-2's causal ``attn.bias`` or ViT's ``cls_token``);
* **embedding tables** (token, position and type embeddings: ``wte``, ``wpe``,
  ``embed_tokens``, ``word_embeddings``, ``position_embeddings``, ``token_type_embeddings``,
  ``*_embedding(s)``, ``embed_*``, T5's ``shared``): they are looked up, not multiplied;
* **tied output heads** (``lm_head``, ``embed_out``, BERT's ``predictions.decoder``) that share
  their data with an embedding table: stored once in the file (the same torch storage),
  byte-equal to it, or declared tied by ``tie_word_embeddings`` in the ``config.json``
  beside the checkpoint (Hugging Face's default is tied). Masking one would mask the embedding too.
  An untied head is a Linear layer and is masked.

``include_embeddings=True`` (the command line's ``--include-embeddings``) masks
embeddings and tied heads too; globs (``include``/``exclude``), a minimum size
and ``conv=False`` narrow the selection further.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from .tensors import FLOAT_TAGS, TensorRef

__all__ = ["SelectionRules", "Skipped", "select_weights", "is_embedding", "CATEGORY_LABELS"]

# category -> how the summary counts it
CATEGORY_LABELS = {
    "include": "not matched by --include",
    "exclude": "matched by --exclude",
    "unreadable": "unreadable",
    "dtype": "not floating point",
    "ndim": "not a matrix or conv weight (0-D, 1-D or more than 5-D)",
    "not-weight": "not a layer weight (buffers, parameters)",
    "embedding": "embedding tables",
    "tied": "output heads tied to an embedding",
    "conv": "conv weights (--no-conv)",
    "small": "smaller than --min-numel",
    "empty": "empty",
}

_HEAD_OWNERS = ("lm_head", "embed_out")  # output heads that are tied to the token embedding in many models


class Skipped(NamedTuple):
    name: str
    category: str  # a key of CATEGORY_LABELS
    reason: str


@dataclass(frozen=True)
class SelectionRules:
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    min_numel: int = 4096
    conv: bool = True
    include_embeddings: bool = False


def _owner(name: str) -> str:
    """The module that owns a parameter: ``a.word_embeddings.weight`` -> ``word_embeddings``."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[-1].lower().endswith("weight"):
        return parts[-2]
    return parts[-1]


def is_embedding(name: str, shape: Sequence[int]) -> bool:
    """True for the names embedding tables have in common models (never for a conv kernel)."""
    parts = name.split(".")
    if len(shape) >= 3 and parts[-1] == "weight":
        return False  # a conv kernel, even inside an embedding module (ViT's patch_embeddings.projection.weight)
    owner = _owner(name).lower()
    if owner == "embed_out":
        return False  # GPT-NeoX's output head
    return (owner in ("wte", "wpe", "emb", "relative_attention_bias") or name == "shared.weight"
            or owner.startswith("embed_") or owner.endswith(("embedding", "embeddings")))


def _is_output_head(name: str) -> bool:
    owner = _owner(name)
    return owner in _HEAD_OWNERS or name.endswith("predictions.decoder.weight") or name == "output.weight"


def _ties_declared(config: dict | None) -> bool:
    """Hugging Face's ``tie_word_embeddings`` (default True when a config exists but does not say)."""
    if not isinstance(config, dict):
        return False
    for cfg in (config, config.get("text_config")):
        if isinstance(cfg, dict) and "tie_word_embeddings" in cfg:
            return bool(cfg["tie_word_embeddings"])
    return True


def _tied_to(ref: TensorRef, embeddings: list[TensorRef], config: dict | None) -> TensorRef | None:
    """The embedding table ``ref`` shares its data with, if any."""
    same_shape = [e for e in embeddings if e.shape == ref.shape]
    for e in same_shape:
        if ref.storage is not None and ref.storage == e.storage:
            return e
    if same_shape and _is_output_head(ref.name) and _ties_declared(config):
        return same_shape[0]
    for e in same_shape:
        if e.dtype == ref.dtype and not e.unreadable and np.array_equal(e.load(), ref.load()):
            return e
    return None


def select_weights(refs: Sequence[TensorRef], rules: SelectionRules = SelectionRules(),
                   config: dict | None = None) -> tuple[list[TensorRef], list[Skipped]]:
    """Split ``refs`` into the matmul weights to mask and the skipped tensors (each with category and reason).

    Parameters
    ----------
    refs : sequence of TensorRef
        A checkpoint's tensors.
    rules : SelectionRules
        Globs, minimum size, conv weights, embeddings.
    config : dict, optional
        The model's ``config.json`` (for ``tie_word_embeddings``).

    Examples
    --------
    >>> import numpy as np
    >>> from transmask.io import TensorRef
    >>> refs = [TensorRef(name, shape, "F32", "demo", lambda s=shape: np.zeros(s, np.float32))
    ...         for name, shape in [("embed_tokens.weight", (100, 64)), ("layers.0.q_proj.weight", (64, 64)),
    ...                             ("layers.0.norm.weight", (64,))]]
    >>> selected, skipped = select_weights(refs)
    >>> [r.name for r in selected], [(s.name, s.category) for s in skipped]
    (['layers.0.q_proj.weight'], [('embed_tokens.weight', 'embedding'), ('layers.0.norm.weight', 'ndim')])
    """
    candidates: list[TensorRef] = []
    skipped: dict[str, Skipped] = {}

    def skip(ref: TensorRef, category: str, reason: str) -> None:
        skipped[ref.name] = Skipped(ref.name, category, reason)

    for ref in refs:
        ndim = len(ref.shape)
        if rules.include and not any(fnmatch.fnmatchcase(ref.name, g) for g in rules.include):
            skip(ref, "include", "not matched by --include")
        elif any(fnmatch.fnmatchcase(ref.name, g) for g in rules.exclude):
            skip(ref, "exclude", "matched by --exclude")
        elif ref.unreadable:
            skip(ref, "unreadable", ref.unreadable)
        elif ref.dtype not in FLOAT_TAGS:
            skip(ref, "dtype", f"dtype {ref.dtype} is not floating point")
        elif ndim < 2 or ndim > 5:
            skip(ref, "ndim", f"{ndim}-D" + (" (neither a matrix nor a conv weight)" if ndim > 5 else ""))
        elif "." in ref.name and not ref.name.rsplit(".", 1)[1].lower().endswith("weight"):
            skip(ref, "not-weight", "not a layer weight (its name does not end in 'weight': a buffer or parameter)")
        elif not rules.include_embeddings and is_embedding(ref.name, ref.shape):
            skip(ref, "embedding", "embedding table: looked up, not multiplied (--include-embeddings masks it)")
        else:
            candidates.append(ref)

    embeddings = [r for r in refs if len(r.shape) == 2 and not r.unreadable and is_embedding(r.name, r.shape)]
    selected = []
    for ref in candidates:
        tied = None if rules.include_embeddings or len(ref.shape) != 2 else _tied_to(ref, embeddings, config)
        if tied is not None:
            skip(ref, "tied", f"output head tied to {tied.name} (--include-embeddings masks it)")
        elif len(ref.shape) > 2 and not rules.conv:
            skip(ref, "conv", "conv weight (--no-conv)")
        elif ref.numel < rules.min_numel:
            skip(ref, "small", f"{ref.numel} < --min-numel {rules.min_numel} elements")
        elif ref.numel == 0:
            skip(ref, "empty", "empty")
        else:
            selected.append(ref)
    order = {r.name: i for i, r in enumerate(refs)}
    return selected, sorted(skipped.values(), key=lambda s: order[s.name])
