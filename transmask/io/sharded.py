"""Hugging Face checkpoints: sharded (``model.safetensors.index.json``) and model directories.

``save_pretrained`` splits a large model into shards (``model-00001-of-00003.safetensors``, ...)
and writes an index ``{"metadata": {...}, "weight_map": {tensor name: shard file}}``.
Reading the index reads every shard's header (cheap) and maps each tensor of
the weight map lazily from its shard, so a sharded model is read one tensor at
a time like a single file. The index and the shards must agree: every tensor
of the weight map in the shard it names, no shard tensor missing from the map.

A directory is read as Hugging Face lays one out: ``model.safetensors.index.json``,
else ``model.safetensors``, else ``pytorch_model.bin.index.json``, else ``pytorch_model.bin``.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Callable

from .tensors import CheckpointError, TensorRef, one_line, quote, reject_duplicate_keys

__all__ = ["read_index", "model_file_in", "DIRECTORY_FILES"]

DIRECTORY_FILES = ("model.safetensors.index.json", "model.safetensors",
                   "pytorch_model.bin.index.json", "pytorch_model.bin")


def model_file_in(directory: Path) -> Path:
    """The checkpoint file a Hugging Face model directory is read from."""
    for name in DIRECTORY_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory} is a directory without a model file ({', '.join(DIRECTORY_FILES)}); "
                          "pass a checkpoint file")


def read_index(path: Path, read_file: Callable[[Path], list[TensorRef]]) -> tuple[list[TensorRef], list[Path]]:
    """The tensors of a sharded checkpoint (shard by shard, in file order) and the shard files.

    ``read_file`` reads one shard.
    """
    fail = f"cannot read {path} as a sharded checkpoint index"
    try:
        index = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=reject_duplicate_keys)
    except RecursionError:
        raise CheckpointError(f"{fail}: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{fail}: not JSON ({one_line(exc)})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{fail}: no \"weight_map\" of tensor names to shard files")
    shards: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        parts = PurePosixPath(shard).parts
        if not parts or PurePosixPath(shard).is_absolute() or ".." in parts or "\\" in shard:
            raise CheckpointError(f"{fail}: shard {quote(shard)} is not a file beside the index")
        shards.setdefault(shard, []).append(name)
    for shard, names in shards.items():
        if not (path.parent / shard).is_file():
            raise CheckpointError(f"{fail}: shard {shard} (of tensor {quote(names[0])}) does not exist")
    refs: list[TensorRef] = []
    files: list[Path] = []
    for shard, names in shards.items():
        shard_path = path.parent / shard
        files.append(shard_path)
        found = read_file(shard_path)
        by_name = {r.name: r for r in found}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise CheckpointError(f"{fail}: tensor {quote(missing[0])} is not in {shard}, where the index puts it")
        listed = set(names)
        extra = [r.name for r in found if r.name not in listed]
        if extra:
            raise CheckpointError(f"{fail}: {shard} holds tensor {quote(extra[0])}, which the index does not list")
        refs.extend(found)
    return refs, files
