"""numpy's .npy format: one array per file (and the members of a .npz archive).

The header is parsed by numpy (no pickles: ``allow_pickle=False``); transmask
adds the checks numpy leaves to the caller (non-negative integer dimensions, a
size numpy can hold) so that a hostile header is refused when the file is
opened, never while it is read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import Entry, TensorWriter
from .tensors import (BITS_ONLY_TAGS, CheckpointError, TensorRef, check_shape, dtype_tag, one_line, quote, tag_dtype,
                      to_float)

__all__ = ["read_npy", "read_npy_header", "NpyWriter", "numpy_storable", "check_numpy_entry"]


def read_npy_header(fp, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the .npy header at ``fp``'s position (left just after the header)."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dt = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dt = np.lib.format.read_array_header_2_0(fp)
        else:
            shape, fortran, dt = np.lib.format._read_array_header(fp, version)  # (3, 0): no public reader
    except Exception as exc:  # numpy raises ValueError, but a hostile header can provoke others
        raise CheckpointError(f"{what}: {one_line(exc)}") from exc
    if dt.hasobject:
        raise CheckpointError(f"{what}: holds Python objects; only numeric arrays are supported")
    if not isinstance(fortran, bool):
        raise CheckpointError(f"{what}: fortran_order is not a boolean")
    return check_shape(shape, dt.itemsize, what), fortran, dt


def read_npy(path: Path) -> list[TensorRef]:
    """One array, memory-mapped; it is named after the file (``layer.weight.npy`` -> ``layer.weight``)."""
    what = f"cannot read {path} as .npy"
    with open(path, "rb") as f:
        shape, fortran, dt = read_npy_header(f, what)
        offset = f.tell()
    nbytes = int(np.prod(shape, dtype=object)) * dt.itemsize
    size = path.stat().st_size
    if offset + nbytes > size:
        raise CheckpointError(f"{what}: the data is truncated ({size - offset} of {nbytes} bytes)")

    def read() -> np.ndarray:
        if nbytes == 0:
            return np.empty(shape, dt, order="F" if fortran else "C")
        return np.memmap(path, dtype=dt, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")

    return [TensorRef(path.stem, shape, dtype_tag(dt), str(path), read, storage=(str(path), offset))]


def numpy_storable(arr: np.ndarray, tag: str) -> np.ndarray:
    """The array numpy formats store for a tensor of dtype ``tag``: bfloat16 widened to float32."""
    return to_float(arr, tag) if tag == "BF16" else arr


def check_numpy_entry(entry: Entry, where: str) -> None:
    """Refuse dtypes .npy/.npz cannot store (float8; bfloat16 is stored as float32)."""
    if entry.dtype in BITS_ONLY_TAGS and entry.dtype != "BF16":
        raise CheckpointError(f"{where}: tensor {quote(entry.name)} has dtype {entry.dtype}, which .npz/.npy "
                              "cannot store; write .safetensors instead")
    try:
        dt = tag_dtype(entry.dtype)
    except TypeError:
        dt = None
    if dt is None or dt.hasobject:
        raise CheckpointError(f"{where}: tensor {quote(entry.name)} has dtype {entry.dtype}, which .npz/.npy "
                              "cannot store")


class NpyWriter(TensorWriter):
    """A single .npy array (when exactly one tensor is written)."""

    format = "npy"

    def check_entries(self, entries: list[Entry], where: str) -> None:
        if len(entries) != 1:
            raise CheckpointError(f"{self.path}: a .npy file holds one array but {len(entries)} tensors would be "
                                  "written; use .safetensors or .npz")
        check_numpy_entry(entries[0], where)

    def _write(self, f, entry: Entry, arr: np.ndarray) -> None:
        np.lib.format.write_array(f, np.asanyarray(numpy_storable(arr, entry.dtype)), allow_pickle=False)
