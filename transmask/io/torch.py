"""PyTorch checkpoints (``torch.save`` files: .pt/.pth/.bin/.ckpt), read and written with torch (imported lazily).

Reading uses ``torch.load(weights_only=True)`` (pickles are never executed)
with ``mmap=True`` where the file allows it (the zip format of torch >= 1.6);
a nested ``state_dict`` (a training checkpoint's ``{"model": ..., "optimizer": ...}``)
is flattened with dots. Two keys that flatten to one name (``{'a': {'b': x}, 'a.b': y}``,
``{1: x, '1': y}``) are refused, naming both.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .atomic import Entry, TensorWriter
from .tensors import (BITS_ONLY_TAGS, TAG_DTYPES, CheckpointError, CheckpointNote, TensorRef, check_shape,
                      check_unique_names, dtype_tag, one_line, quote, tag_dtype)

__all__ = ["read_torch", "TorchWriter"]

# torch dtype name -> safetensors tag, for the types numpy has no dtype for (the rest goes through numpy)
_BITS_TAGS = {
    "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ",
}


def _torch():
    from .._optional import require

    return require("torch", "reading or writing torch checkpoints (.pt/.pth/.bin/.ckpt)")


def _tag(torch, dtype) -> str | None:
    """safetensors tag (or numpy dtype.str) of a torch dtype; None when numpy cannot hold it."""
    short = str(dtype).removeprefix("torch.")
    if short in _BITS_TAGS:
        return _BITS_TAGS[short]
    try:
        return dtype_tag(torch.empty(0, dtype=dtype).numpy().dtype)
    except (TypeError, RuntimeError):
        return None


def read_torch(path: Path) -> list[TensorRef]:
    """The tensors of a torch ``state_dict`` (nested dicts and lists flattened with dots), in file order."""
    torch = _torch()
    try:
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        # mmap needs the zip-based format (torch >= 1.6); legacy files are read into memory.
        if "mmap" not in str(exc).lower() and "zip" not in str(exc).lower():
            raise CheckpointError(f"cannot read {path} as a torch checkpoint: {one_line(exc)}") from exc
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc2:
            raise CheckpointError(f"cannot read {path} as a torch checkpoint: {one_line(exc2)}") from exc2
        warnings.warn(CheckpointNote(f"{path} is not memory-mappable (legacy torch format); it was read into memory"),
                      stacklevel=2)
    found: list[tuple[str, str, object]] = []  # (name, key path, tensor)

    def walk(prefix: str, keys: str, value) -> None:
        if isinstance(value, torch.Tensor):
            found.append((prefix or path.stem, keys or "the file's only tensor", value))
        elif isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), f"{keys}[{key!r}]", sub)
        elif isinstance(value, (list, tuple)):
            for i, sub in enumerate(value):
                walk(f"{prefix}.{i}" if prefix else str(i), f"{keys}[{i}]", sub)
        # other values (epoch counters, config strings) carry no weights: ignored

    walk("", "", obj)
    check_unique_names(((name, keys) for name, keys, _ in found), f"{path} (nested keys joined with '.')")
    return [_ref(torch, path, name, t) for name, _, t in found]


def _ref(torch, path: Path, name: str, t) -> TensorRef:
    tag = _tag(torch, t.dtype)
    unreadable = None
    if t.device.type == "meta":
        unreadable = "is on the meta device (it holds no data)"
    elif t.layout != torch.strided or t.is_quantized:
        kind = "quantized" if t.is_quantized else str(t.layout).removeprefix("torch.")
        unreadable = f"is {kind}; only dense tensors are supported"
    elif tag is None:
        unreadable = f"has dtype {t.dtype}, which numpy cannot hold"
    if tag is None:
        tag = str(t.dtype)
    itemsize = TAG_DTYPES[tag].itemsize if tag in TAG_DTYPES else t.element_size()
    shape = check_shape(tuple(t.shape), itemsize, f"cannot read {path}: tensor {quote(name)}")
    storage = None
    if unreadable is None and t.numel() > 0:  # tensors saved once and loaded twice share their storage
        storage = ("torch", t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.stride()), str(t.dtype))

    def read() -> np.ndarray:
        x = t.detach()
        if tag in BITS_ONLY_TAGS:
            return x.view({2: torch.int16, 1: torch.uint8}[x.element_size()]).numpy().view(TAG_DTYPES[tag])
        return x.numpy()

    return TensorRef(name, shape, tag, str(path), read, storage=storage, unreadable=unreadable)


def _torch_dtype(torch, tag: str):
    """The torch dtype that stores a tensor of dtype ``tag``, or None."""
    for short, t in _BITS_TAGS.items():
        if t == tag:
            return getattr(torch, short, None)
    try:
        return torch.from_numpy(np.empty(0, tag_dtype(tag))).dtype
    except (TypeError, RuntimeError):
        return None


class _RecordingFile:
    """A file wrapper that remembers the first OSError (torch reports a failed write as an opaque RuntimeError)."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


class TorchWriter(TensorWriter):
    """A torch ``state_dict`` file (``torch.save``): tensors are collected in memory and saved by finish()."""

    format = "pt"

    def check_entry(self, entry: Entry, where: str) -> None:
        if _torch_dtype(self._torch, entry.dtype) is None:
            raise CheckpointError(f"{where}: tensor {quote(entry.name)} has dtype {entry.dtype}, which torch "
                                  "cannot store")

    def __init__(self, path, entries, metadata=None):
        self._torch = _torch()
        self._tensors: dict = {}
        super().__init__(path, entries, metadata)

    def _write(self, f, entry: Entry, arr: np.ndarray) -> None:
        torch = self._torch
        arr = np.array(arr, copy=True, order="C")  # own, writable memory
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        t = torch.from_numpy(arr)
        if entry.dtype in BITS_ONLY_TAGS:
            t = t.view(_torch_dtype(torch, entry.dtype))
        self._tensors[entry.name] = t

    def _finish(self, f) -> None:
        out = _RecordingFile(f)
        try:
            self._torch.save(self._tensors, out)
        except Exception as exc:
            if out.error is not None:
                raise out.error from exc
            raise CheckpointError(f"cannot write {self.path}: {one_line(exc)}") from exc
        finally:
            self._tensors.clear()

    def _close(self) -> None:
        self._tensors.clear()
