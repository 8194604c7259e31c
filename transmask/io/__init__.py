"""Checkpoint I/O: read tensors one at a time from .npy/.npz/.safetensors/torch files and Hugging Face
model directories, and write outputs atomically.

Reading
    :func:`read_checkpoint` lists a checkpoint's tensors as :class:`TensorRef`
    (name, shape, dtype now; data on ``load()``, memory-mapped where the format
    allows). Hostile or broken files are refused with a one-line
    :class:`CheckpointError` when they are opened, never half-way through.

Writing
    :func:`open_output` returns a writer for ``.safetensors``, ``.npz``, ``.npy``
    or torch ``.pt``; it checks every tensor (names and dtypes the format stores
    faithfully) before it creates anything, writes into a temporary file beside
    the target and renames it into place only on success (see :mod:`transmask.io.atomic`).
    :class:`OutputGroup` makes several outputs appear together or not at all.

Which tensors to mask
    :func:`select_weights` keeps the matmul weights (Linear and conv) and says
    why each other tensor is skipped (see :mod:`transmask.io.selection`).

torch is imported only for torch files; nothing here needs the ``safetensors`` package.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from transmask import io
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> np.savez(d / "model.npz", w=np.ones((4, 8), np.float32))
>>> ckpt = io.read_checkpoint(d / "model.npz")
>>> [(t.name, t.shape, t.dtype) for t in ckpt.tensors]
[('w', (4, 8), 'F32')]
>>> with io.OutputGroup() as group:
...     out = group.add(io.open_output(d / "masks.safetensors", [io.Entry("w", "BOOL", (4, 8))]))
...     out.write("w", ckpt.tensors[0].load() > 0)
...     group.commit()
>>> sorted(p.name for p in d.iterdir())
['masks.safetensors', 'model.npz']
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import AtomicFile, Entry, OutputGroup, TensorWriter, check_output_path, signals_deferred
from .npy import NpyWriter, read_npy
from .npz import NpzWriter, read_npz
from .safetensors import SafetensorsWriter, read_safetensors
from .selection import CATEGORY_LABELS, SelectionRules, Skipped, is_embedding, select_weights
from .sharded import DIRECTORY_FILES, model_file_in, read_index
from .tensors import (BITS_ONLY_TAGS, FLOAT_TAGS, TAG_DTYPES, CheckpointError, CheckpointNote, TensorRef,
                      check_unique_names, dtype_tag, one_line, quote, tag_dtype, to_float)

__all__ = [
    "Checkpoint", "read_checkpoint", "checkpoint_format", "INPUT_SUFFIXES",
    "open_output", "output_format", "OUTPUT_FORMATS", "OutputGroup", "TensorWriter", "Entry", "AtomicFile",
    "check_output_path", "signals_deferred",
    "TensorRef", "CheckpointError", "CheckpointNote", "TAG_DTYPES", "FLOAT_TAGS", "BITS_ONLY_TAGS",
    "dtype_tag", "tag_dtype", "to_float",
    "one_line", "quote", "check_unique_names",
    "select_weights", "SelectionRules", "Skipped", "is_embedding", "CATEGORY_LABELS", "DIRECTORY_FILES",
]

_READERS = {"npy": read_npy, "npz": read_npz, "safetensors": read_safetensors}
INPUT_SUFFIXES = {".npy": "npy", ".npz": "npz", ".safetensors": "safetensors",
                  ".pt": "torch", ".pth": "torch", ".bin": "torch", ".ckpt": "torch"}


@dataclass
class Checkpoint:
    """A checkpoint's tensors (data read on demand) and, where one lies beside it, the model's config.json."""

    path: Path  # the file read (the index of a sharded checkpoint)
    format: str  # "npy", "npz", "safetensors", "torch", or "index" (sharded)
    tensors: list[TensorRef]
    config: dict | None = None
    files: list[Path] = field(default_factory=list)  # every file read: the checkpoint and its shards

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def checkpoint_format(path: Path) -> str:
    """The format of a checkpoint file, by its name."""
    name = path.name.lower()
    if name.endswith(".index.json"):
        return "index"
    fmt = INPUT_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise CheckpointError(
            f"unknown checkpoint format {path.suffix or '(no suffix)'!r} for {path}; expected .npy, .npz, "
            ".safetensors, a torch state_dict (.pt/.pth/.bin/.ckpt), a sharded checkpoint's *.index.json, "
            "or a Hugging Face model directory")
    return fmt


def _read_file(path: Path) -> list[TensorRef]:
    fmt = checkpoint_format(path)
    if fmt == "index":
        raise CheckpointError(f"{path}: an index cannot name another index as a shard")
    if fmt == "torch":
        from .torch import read_torch

        return read_torch(path)
    return _READERS[fmt](path)


def _read_config(directory: Path) -> dict | None:
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        warnings.warn(CheckpointNote(f"{path} is not readable JSON ({one_line(exc)}); "
                                     "tied output heads are recognised by their data only"), stacklevel=2)
        return None
    return config if isinstance(config, dict) else None


def read_checkpoint(path) -> Checkpoint:
    """List the tensors of a checkpoint file, a sharded checkpoint's index, or a Hugging Face model directory.

    Parameters
    ----------
    path : str or Path
        ``.npy`` (one array, named after the file), ``.npz``, ``.safetensors``,
        a torch ``state_dict`` (``.pt``/``.pth``/``.bin``/``.ckpt``; needs torch),
        ``*.index.json`` of a sharded checkpoint, or a directory holding one of
        ``model.safetensors.index.json``, ``model.safetensors``, ``pytorch_model.bin.index.json``,
        ``pytorch_model.bin``.

    Raises
    ------
    CheckpointError
        Missing, unreadable, malformed or empty checkpoints, and names that collide.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file: {path}")
    directory = path if path.is_dir() else path.parent
    file = model_file_in(path) if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{path} is not a regular file")
    fmt = checkpoint_format(file)
    if fmt == "index":
        tensors, shards = read_index(file, _read_file)
    else:
        tensors, shards = _read_file(file), []
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors")
    check_unique_names(((t.name, t.source) for t in tensors), str(path))
    return Checkpoint(file, fmt, tensors, _read_config(directory), [file, *shards])


# output format -> writer class (torch's is imported on use)
OUTPUT_FORMATS = ("safetensors", "npz", "npy", "pt")
_OUTPUT_SUFFIXES = {".npz": "npz", ".npy": "npy", ".pt": "pt", ".pth": "pt", ".bin": "pt", ".ckpt": "pt"}


def output_format(path, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format named by the output's suffix (``.safetensors`` for any other)."""
    if fmt is not None:
        if fmt not in OUTPUT_FORMATS:
            raise CheckpointError(f"unknown output format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
        return fmt
    return _OUTPUT_SUFFIXES.get(Path(path).suffix.lower(), "safetensors")


def open_output(path, entries, metadata: dict[str, str] | None = None, fmt: str | None = None) -> TensorWriter:
    """A writer for ``entries`` (objects with ``name``, ``dtype``, ``shape``; e.g. TensorRef or :class:`Entry`).

    Everything is checked before the temporary file is created; write the
    tensors in order with ``write(name, array)``, then ``finish()`` and
    ``publish()`` (or use an :class:`OutputGroup`). ``metadata`` (strings) is
    stored by safetensors only.
    """
    fmt = output_format(path, fmt)
    if fmt == "pt":
        from .torch import TorchWriter

        return TorchWriter(path, entries, metadata)
    writer = {"safetensors": SafetensorsWriter, "npz": NpzWriter, "npy": NpyWriter}[fmt]
    return writer(path, entries, metadata)
