"""The safetensors format, read and written without the ``safetensors`` package.

A file is an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
``{name: {"dtype": TAG, "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {str: str}}``
and the raw little-endian data, offsets counted from the end of the header.

Reading memory-maps each tensor in place (zero copies, one tensor at a time,
bfloat16 and float8 as their bits, which ``safe_open(framework="numpy")``
cannot read). The header is checked by the rules of the reference
implementation (``safetensors``' Rust ``Metadata::validate``), so a file is read
here exactly when the library reads it:

* header length at most 100 MB and inside the file; UTF-8 JSON, no ``NaN`` or
  ``Infinity``, no key given twice (the library's last-wins would drop one);
* an object whose ``__metadata__`` is absent, ``null`` or a map of strings to strings,
  and whose other values are objects with a known ``dtype`` string, a ``shape``
  list and a two-element ``data_offsets`` list of non-negative integers
  (no booleans, floats, strings or values of 2**64 and more);
* sorted by offsets, the tensors cover the data exactly: the first starts at 0,
  each starts where the previous ends (no gaps, no overlaps, no aliases), each
  spans ``prod(shape) * itemsize`` bytes (no overflow), the last ends at the end of the file.

Beyond the library, tensors numpy cannot hold (more than 64 dimensions, more
than 2**63 bytes) and sub-byte dtypes (``F4``, ``F6_*``) are refused by name.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from .atomic import Entry, TensorWriter
from .tensors import (TAG_DTYPES, CheckpointError, TensorRef, check_shape, check_unique_names, quote,
                      reject_duplicate_keys)

__all__ = ["read_safetensors", "read_header", "SafetensorsWriter"]

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit
_U64 = 2**64
# every dtype the reference implementation knows, with its size in bits
_LIBRARY_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
    "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}


class _Float(float):
    """A JSON number written with a fraction or exponent (never a valid size here)."""


def _reject_constant(text: str):
    raise ValueError(f"{text} is not valid JSON")


def _parse_int(text: str) -> int:
    value = int(text)
    if text.startswith("-"):  # "-0" too: the reference parser reads negative numbers as signed or float
        return _Float(value)
    return value


def _is_u64(v) -> bool:
    return type(v) is int and 0 <= v < _U64


def read_header(path: Path) -> tuple[int, dict[str, str] | None, list[tuple[str, str, tuple[int, ...], int, int]]]:
    """Parse and validate a safetensors header.

    Returns
    -------
    data_start : int
        File offset of the data (8 + header length).
    metadata : dict or None
        The ``__metadata__`` strings.
    tensors : list of (name, tag, shape, begin, end)
        In file order; offsets relative to ``data_start``.
    """
    fail = f"cannot read {path} as .safetensors"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{fail}: file too short ({size} bytes)")
        (n_header,) = struct.unpack("<Q", head)
        if n_header > MAX_HEADER_BYTES:
            raise CheckpointError(f"{fail}: header length {n_header} exceeds {MAX_HEADER_BYTES} bytes")
        if 8 + n_header > size:
            raise CheckpointError(f"{fail}: header length {n_header} runs past the end of the file ({size} bytes)")
        blob = f.read(n_header)
    try:
        text = blob.decode("utf-8")
        header = json.loads(text, object_pairs_hook=reject_duplicate_keys, parse_constant=_reject_constant,
                            parse_int=_parse_int, parse_float=_Float)
    except UnicodeDecodeError:
        raise CheckpointError(f"{fail}: header is not UTF-8") from None
    except RecursionError:
        raise CheckpointError(f"{fail}: header is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and the hooks' errors
        raise CheckpointError(f"{fail}: header is not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{fail}: header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{fail}: __metadata__ is not a map of strings to strings")
    for key, value in (metadata or {}).items():
        _check_text(key, fail, "metadata key")
        _check_text(value, fail, "metadata value")

    tensors = []
    for name, info in header.items():
        _check_text(name, fail, "tensor name")
        what = f"{fail}: tensor {quote(name)}"
        if not isinstance(info, dict):
            raise CheckpointError(f"{what}: entry is not an object")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in info:
                raise CheckpointError(f"{what}: entry has no {key!r}")
        tag, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(tag, str) or tag not in _LIBRARY_BITS:
            raise CheckpointError(f"{what}: unknown dtype {quote(str(tag), 24)}")
        if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
            raise CheckpointError(f"{what}: shape is not a list of non-negative integers below 2**64")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_u64(o) for o in offsets):
            raise CheckpointError(f"{what}: data_offsets is not a pair of non-negative integers below 2**64")
        tensors.append((name, tag, tuple(shape), offsets[0], offsets[1]))

    # The reference validation: sorted by offsets, the tensors tile the data exactly.
    tensors.sort(key=lambda t: (t[3], t[4]))
    end_of_previous = 0
    for name, tag, shape, begin, end in tensors:
        what = f"{fail}: tensor {quote(name)}"
        if begin != end_of_previous or end < begin:
            raise CheckpointError(f"{what}: data_offsets [{begin}, {end}] do not start where the previous tensor "
                                  f"ends ({end_of_previous}); tensors must not overlap or leave gaps")
        end_of_previous = end
        bits = _checked_product((*shape, _LIBRARY_BITS[tag]))
        if bits is None:
            raise CheckpointError(f"{what}: size of shape {list(shape)} overflows 64 bits")
        if bits % 8:
            raise CheckpointError(f"{what}: {tag} data of shape {list(shape)} does not end on a byte boundary")
        if end - begin != bits // 8:
            raise CheckpointError(f"{what}: data_offsets span {end - begin} bytes, shape {list(shape)} of {tag} "
                                  f"needs {bits // 8}")
    data_start = 8 + n_header
    if data_start + end_of_previous != size:
        raise CheckpointError(f"{fail}: the tensors cover {end_of_previous} bytes of data, the file holds "
                              f"{size - data_start}")
    return data_start, metadata, tensors


def _checked_product(factors) -> int | None:
    """The product, or None where a running product reaches 2**64 (as the reference's checked multiply)."""
    product = 1
    for f in factors:
        product *= f
        if product >= _U64:
            return None
    return product


def _check_text(s: str, fail: str, what: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # "\udc80" escapes decode to lone surrogates; the reference parser refuses them
        raise CheckpointError(f"{fail}: {what} {quote(s)} holds a lone surrogate") from None


def read_safetensors(path: Path) -> list[TensorRef]:
    """The tensors of a .safetensors file, in file order, each memory-mapped on load."""
    data_start, _, tensors = read_header(path)
    refs = []
    for name, tag, shape, begin, end in tensors:
        if tag not in TAG_DTYPES:
            raise CheckpointError(f"tensor {quote(name)} in {path} has dtype {tag}, which transmask cannot read")
        dt = TAG_DTYPES[tag]
        shape = check_shape(shape, dt.itemsize, f"cannot read {path}: tensor {quote(name)}")
        refs.append(TensorRef(name, shape, tag, str(path), _mapper(path, dt, data_start + begin, shape),
                              storage=(str(path), begin, end)))
    check_unique_names(((r.name, "the header") for r in refs), str(path))
    return refs


def _mapper(path: Path, dt: np.dtype, offset: int, shape: tuple[int, ...]):
    def read() -> np.ndarray:
        if math.prod(shape) == 0:
            return np.empty(shape, dt)
        return np.memmap(path, dtype=dt, mode="r", offset=offset, shape=shape)

    return read


def _little_endian_bytes(arr: np.ndarray) -> memoryview:
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return memoryview(np.ascontiguousarray(arr).reshape(-1)).cast("B")


class SafetensorsWriter(TensorWriter):
    """Streams a .safetensors file: the whole header first (names, dtypes, shapes known up front), then the data."""

    format = "safetensors"

    def check_entry(self, entry: Entry, where: str) -> None:
        if entry.dtype not in TAG_DTYPES:
            raise CheckpointError(f"{where}: tensor {quote(entry.name)} has dtype {entry.dtype}, which safetensors "
                                  "cannot store; write .npz or .pt instead")
        if entry.name == "__metadata__":
            raise CheckpointError(f"{where}: a tensor named '__metadata__' cannot be stored in safetensors "
                                  "(the name is reserved for the metadata)")

    def _start(self, f) -> None:
        header: dict = {"__metadata__": self.metadata} if self.metadata else {}
        offset = 0
        for e in self.entries:
            nbytes = math.prod(e.shape) * TAG_DTYPES[e.dtype].itemsize
            header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        blob += b" " * (-len(blob) % 8)  # the reference writer pads the header to 8 bytes
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)

    def _write(self, f, entry: Entry, arr: np.ndarray) -> None:
        if arr.dtype.itemsize != TAG_DTYPES[entry.dtype].itemsize:
            raise RuntimeError(f"tensor {entry.name!r}: {arr.dtype} data for dtype {entry.dtype}")
        if arr.size:
            f.write(_little_endian_bytes(arr))
