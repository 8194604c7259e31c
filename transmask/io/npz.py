"""numpy's .npz format: a zip archive of .npy members (``np.savez``, ``np.savez_compressed``).

Stored members (``np.savez``) are memory-mapped in place (their CRC checked on
load, as zipfile would); compressed ones
(``np.savez_compressed``) cannot be mapped and are decompressed one at a time on
load. Every member's header is read and checked when the archive is opened
(dimensions, dtype, and that the member holds the bytes its header promises),
so a truncated or hostile archive is refused before anything is written.
Writing streams one member at a time (uncompressed, as ``np.savez``).
"""
from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .atomic import Entry, TensorWriter
from .npy import check_numpy_entry, numpy_storable, read_npy_header
from .tensors import CheckpointError, TensorRef, check_unique_names, dtype_tag, one_line, quote

__all__ = ["read_npz", "NpzWriter"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length


def read_npz(path: Path) -> list[TensorRef]:
    """The ``.npy`` members of an archive, in archive order (other members are not tensors and are ignored)."""
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # BadZipFile, OSError, and what a hostile central directory provokes
        raise CheckpointError(f"cannot read {path} as .npz: {one_line(exc)}") from exc
    refs = []
    archive_size = path.stat().st_size
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            what = f"cannot read member {quote(info.filename)} of {path}"
            try:
                if info.compress_type == zipfile.ZIP_STORED:
                    refs.append(_stored_member(path, info, archive_size, what))
                else:
                    with zf.open(info) as fp:
                        shape, fortran, dt = read_npy_header(fp, what)
                        header_bytes = fp.tell()
                    _check_size(info.file_size, header_bytes, shape, dt, what)
                    refs.append(TensorRef(info.filename[:-4], shape, dtype_tag(dt), f"{path} ({info.filename})",
                                          _decompressor(path, info.filename)))
            except CheckpointError:
                raise
            except Exception as exc:
                raise CheckpointError(f"{what}: {one_line(exc)}") from exc
    check_unique_names(((r.name, f"member #{i}") for i, r in enumerate(refs)), str(path))
    return refs


def _check_size(member_size: int, header_bytes: int, shape, dt: np.dtype, what: str) -> int:
    nbytes = int(np.prod(shape, dtype=object)) * dt.itemsize
    if header_bytes + nbytes > member_size:
        raise CheckpointError(f"{what}: truncated (the header promises {nbytes} bytes of data, the member holds "
                              f"{max(member_size - header_bytes, 0)})")
    return nbytes


def _stored_member(path: Path, info: zipfile.ZipInfo, archive_size: int, what: str) -> TensorRef:
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(_LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size or _LOCAL_HEADER.unpack(local)[0] != b"PK\x03\x04":
            raise CheckpointError(f"{what}: corrupt zip member header")
        name_len, extra_len = _LOCAL_HEADER.unpack(local)[1:]
        start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        f.seek(start)
        shape, fortran, dt = read_npy_header(f, what)
        offset = f.tell()
    stored = min(info.file_size, info.compress_size, archive_size - start)
    nbytes = _check_size(stored, offset - start, shape, dt, what)
    order = "F" if fortran else "C"
    crc, member_size = info.CRC, info.file_size

    def read() -> np.ndarray:
        # zipfile checks the CRC of what it decompresses; a mapped member is checked here (one pass,
        # which also brings the pages in for the solver), so damaged data is never masked silently.
        member = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(member_size,)) if member_size else b""
        if zlib.crc32(member) != crc:
            raise CheckpointError(f"member {quote(info.filename)} of {path} fails its CRC check "
                                  "(the archive is damaged)")
        del member
        if nbytes == 0:
            return np.empty(shape, dt, order=order)
        return np.memmap(path, dtype=dt, mode="r", offset=offset, shape=shape, order=order)

    return TensorRef(info.filename[:-4], shape, dtype_tag(dt), f"{path} ({info.filename})", read,
                     storage=(str(path), offset))


def _decompressor(path: Path, member: str):
    def read() -> np.ndarray:
        with zipfile.ZipFile(path) as zf, zf.open(member) as fp:
            return np.lib.format.read_array(fp, allow_pickle=False)

    return read


class NpzWriter(TensorWriter):
    """Streams an uncompressed .npz (as ``np.savez``), one member at a time."""

    format = "npz"

    def check_entry(self, entry: Entry, where: str) -> None:
        if "\0" in entry.name:  # zip member names end at the first NUL: two tensors could become one
            raise CheckpointError(f"{where}: tensor name {quote(entry.name)} holds a NUL character, which .npz "
                                  "member names cannot store; write .safetensors or .pt instead")
        if os.sep != "/" and os.sep in entry.name:  # zipfile turns the separator into '/'
            raise CheckpointError(f"{where}: tensor name {quote(entry.name)} holds {os.sep!r}, which .npz member "
                                  "names cannot store here")
        check_numpy_entry(entry, where)

    def _start(self, f) -> None:
        self._zf = zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True)

    def _write(self, f, entry: Entry, arr: np.ndarray) -> None:
        with self._zf.open(entry.name + ".npy", "w", force_zip64=True) as fp:
            np.lib.format.write_array(fp, np.asanyarray(numpy_storable(arr, entry.dtype)), allow_pickle=False)

    def _finish(self, f) -> None:
        self._zf.close()

    def _close(self) -> None:
        self._zf.close()
