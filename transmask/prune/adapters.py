"""How the pruner walks a model one block at a time.

The pruner needs three things from a model, which a *block adapter* provides:

``blocks()``
    The blocks in forward order (e.g. the decoder layers); every ``nn.Linear``
    inside them is pruned.
``block_inputs(input_ids)``
    The hidden states that enter the first block for a batch of token ids, and the
    keyword arguments every block is called with (attention mask, rotary
    embeddings, ...) for that batch.
``run_block(block, hidden, kwargs)``
    The block's output hidden states.

Built in:

* :class:`HFDecoderAdapter` for Hugging Face ``transformers`` decoder models
  (Llama family and others that keep their layers in ``model.layers``,
  ``transformer.h``, ``gpt_neox.layers``, ...). It catches the first block's
  inputs by running the model with a hook that stops at the first block (as
  SparseGPT does), so whatever the model computes before its blocks (embeddings,
  rotary tables, the causal mask) is reproduced exactly.
* :class:`SequentialAdapter` for any module made of ``embed -> blocks -> head``
  where each block maps hidden states to hidden states.

Any object with these three methods works (duck typing; see :class:`BlockAdapter`).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from .._optional import require

torch = require("torch", "transmask.prune")
nn = torch.nn


@runtime_checkable
class BlockAdapter(Protocol):
    """What the pruner needs to run a model block by block."""

    def blocks(self) -> Sequence[nn.Module]: ...

    def block_inputs(self, input_ids) -> tuple[Any, dict]: ...

    def run_block(self, block: nn.Module, hidden, kwargs: dict): ...


class _StopForward(Exception):
    pass


_HF_BLOCK_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "layers")


def _get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class HFDecoderAdapter:
    """Block adapter for Hugging Face causal LMs (``LlamaForCausalLM`` and relatives).

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM in eval mode.
    blocks_path : str, optional
        Dotted attribute path of the ``nn.ModuleList`` of blocks; found
        automatically among ``model.layers``, ``model.decoder.layers``,
        ``transformer.h``, ``gpt_neox.layers``.
    """

    def __init__(self, model, blocks_path: str | None = None):
        self.model = model
        paths = (blocks_path,) if blocks_path else _HF_BLOCK_PATHS
        for path in paths:
            found = _get_path(model, path)
            if isinstance(found, nn.ModuleList) and len(found) > 0:
                self.blocks_path = path
                self._blocks = found
                break
        else:
            raise ValueError(f"cannot find the model's blocks (tried {', '.join(paths)}); pass blocks_path= "
                             "or a custom adapter")

    def blocks(self):
        return list(self._blocks)

    def block_prefix(self, index: int) -> str:
        return f"{self.blocks_path}.{index}"

    @torch.no_grad()
    def block_inputs(self, input_ids):
        captured = {}

        def catch(module, args, kwargs):
            captured["hidden"] = args[0] if args else kwargs.pop("hidden_states")
            captured["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            raise _StopForward

        handle = self._blocks[0].register_forward_pre_hook(catch, with_kwargs=True)
        try:
            self.model(input_ids=input_ids, use_cache=False)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if "hidden" not in captured:
            raise RuntimeError("the model's forward never reached its first block")
        kwargs = captured["kwargs"]
        # no key/value cache while pruning: every block sees the whole sequence
        for key in ("past_key_value", "past_key_values"):
            if key in kwargs:
                kwargs[key] = None
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        return captured["hidden"], kwargs

    @torch.no_grad()
    def run_block(self, block, hidden, kwargs):
        out = block(hidden, **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out


class SequentialAdapter:
    """Block adapter for ``embed -> blocks -> head`` models whose blocks map hidden states to hidden states.

    Parameters
    ----------
    embed : callable
        ``input_ids -> hidden`` (e.g. an ``nn.Embedding``, or a function adding
        positions).
    blocks : sequence of nn.Module
        Called as ``block(hidden)``.
    prefix : str
        Name prefix of the blocks in the model (for the report), e.g. ``"blocks"``.

    Examples
    --------
    >>> import torch                                                     # doctest: +SKIP
    >>> adapter = SequentialAdapter(model.embed, model.blocks, "blocks")  # doctest: +SKIP
    """

    def __init__(self, embed: Callable, blocks: Sequence[nn.Module], prefix: str = "blocks"):
        self.embed = embed
        self._blocks = list(blocks)
        self.prefix = prefix

    def blocks(self):
        return self._blocks

    def block_prefix(self, index: int) -> str:
        return f"{self.prefix}.{index}"

    @torch.no_grad()
    def block_inputs(self, input_ids):
        return self.embed(input_ids), {}

    @torch.no_grad()
    def run_block(self, block, hidden, kwargs):
        out = block(hidden, **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out


def get_adapter(model, adapter=None):
    """The adapter to use for ``model``: ``adapter`` if given, the model's own
    ``block_adapter()`` if it has one, else :class:`HFDecoderAdapter`."""
    if adapter is not None:
        missing = [name for name in ("blocks", "block_inputs", "run_block") if not hasattr(adapter, name)]
        if missing:
            raise TypeError(f"adapter lacks {', '.join(missing)} (see transmask.prune.adapters.BlockAdapter)")
        return adapter
    if hasattr(model, "block_adapter"):
        return model.block_adapter()
    return HFDecoderAdapter(model)
