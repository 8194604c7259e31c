"""The ``transmask`` command line: masks for whole checkpoints, mask diversity, the solver bench, the demo.

Usage (``python -m transmask`` works the same)::

    transmask mask CHECKPOINT -n 2 -m 4 [--method exact|approx|lp] [--keep exactly|at_most]
                   [--no-transposable] [--include GLOB] [--exclude GLOB] [--min-numel K]
                   [--pruned PRUNED] [--json] [--quiet] -o OUT
    transmask diversity -n 4 -m 8 [--size ROWS COLS]
    transmask bench [ARGS...]          # runs bench/solvers.py of a source checkout, e.g. --quick
    transmask demo [ARGS...]           # transmask.demo.main(ARGS)

``mask`` reads a checkpoint one tensor at a time (memory-mapped where the format
allows), computes a mask for every selected weight, prints a per-tensor and a
total table and writes the masks (and optionally the pruned checkpoint)
atomically: outputs go to a temporary file in the target directory and are
renamed into place only when every tensor succeeded, so an error or Ctrl-C
leaves no partial file behind. Errors are reported as one line on stderr with a
non-zero exit status (1: the run failed, 2: bad arguments, 130: interrupted).
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .views import view_to_weight, weight_to_2d

__all__ = ["main"]

PROG = "transmask"

# Exit statuses.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CLIError(Exception):
    """A failure reported to the user as one line, with exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def _one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors can be long)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line


# --------------------------------------------------------------------------------------
# dtypes: tensors travel as raw numpy arrays plus a safetensors dtype tag. Types numpy
# lacks (bfloat16, float8) travel as unsigned integers of the same width holding the bits.
# --------------------------------------------------------------------------------------
_TAG_TO_NP = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"), "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    # bit containers for types numpy has no dtype for
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("<u1"), "F8_E5M2": np.dtype("<u1"), "F8_E8M0": np.dtype("<u1"),
}
_FLOAT_TAGS = ("F16", "BF16", "F32", "F64")
_BITS_ONLY_TAGS = ("BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0")


def _np_tag(dt: np.dtype) -> str | None:
    """The safetensors tag of a numpy dtype, or None when safetensors cannot hold it."""
    for tag, ndt in _TAG_TO_NP.items():
        if tag in _BITS_ONLY_TAGS:
            continue
        if dt.kind == ndt.kind and dt.itemsize == ndt.itemsize:
            return tag
    return None


def _to_float(raw: np.ndarray, tag: str) -> np.ndarray:
    """A float view/copy of a floating tensor: bfloat16 bits widened to float32."""
    if tag == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    if not raw.flags.aligned:  # safetensors/npz offsets need not be aligned; compiled code wants it
        raw = raw.copy()
    return raw


# --------------------------------------------------------------------------------------
# Readers: a checkpoint is a list of TensorRef whose data is read only by load().
# --------------------------------------------------------------------------------------
@dataclass
class TensorRef:
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors tag, or numpy's dtype.str for types safetensors lacks
    load: Callable[[], np.ndarray] = field(repr=False)

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))


def _checkpoint_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "npy"
    if suffix == ".npz":
        return "npz"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return "torch"
    raise CLIError(
        f"unknown checkpoint format {suffix or '(no suffix)'!r} for {path}; "
        "expected .npy, .npz, .safetensors, or a torch state_dict (.pt/.pth/.bin/.ckpt)"
    )


def _read_npy_header(fp) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    return np.lib.format._read_array_header(fp, version)  # (3, 0): no public reader


def _dtype_tag(dt: np.dtype) -> str:
    return _np_tag(dt) or dt.str


def read_npy(path: Path) -> list[TensorRef]:
    """One array, memory-mapped; it is named after the file (``layer.weight.npy`` -> ``layer.weight``)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise CLIError(f"cannot read {path} as .npy: {_one_line(exc)}") from exc
    return [TensorRef(path.stem, tuple(arr.shape), _dtype_tag(arr.dtype), lambda: arr)]


def read_npz(path: Path) -> list[TensorRef]:
    """Members read one at a time; stored (``np.savez``) members are memory-mapped in place,
    compressed (``np.savez_compressed``) ones must be decompressed into memory one by one."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CLIError(f"cannot read {path} as .npz: {_one_line(exc)}") from exc
    refs = []
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[: -len(".npy")]
            try:
                if info.compress_type == zipfile.ZIP_STORED:
                    refs.append(_npz_stored_member(path, info, name))
                else:
                    with zf.open(info) as fp:
                        shape, fortran, dt = _read_npy_header(fp)
                    refs.append(TensorRef(name, tuple(shape), _dtype_tag(dt), _npz_compressed_loader(path, info.filename)))
            except CLIError:
                raise
            except Exception as exc:
                raise CLIError(f"cannot read member {info.filename!r} of {path}: {_one_line(exc)}") from exc
    return refs


def _npz_stored_member(path: Path, info: zipfile.ZipInfo, name: str) -> TensorRef:
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise CLIError(f"corrupt zip member {info.filename!r} in {path}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        shape, fortran, dt = _read_npy_header(f)
        offset = f.tell()
    shape = tuple(shape)
    if dt.hasobject:
        raise CLIError(f"member {info.filename!r} of {path} holds Python objects; only numeric arrays are supported")

    def load() -> np.ndarray:
        if math.prod(shape) == 0:
            return np.empty(shape, dt)
        return np.memmap(path, dtype=dt, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")

    return TensorRef(name, shape, _dtype_tag(dt), load)


def _npz_compressed_loader(path: Path, member: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        with zipfile.ZipFile(path) as zf, zf.open(member) as fp:
            return np.lib.format.read_array(fp, allow_pickle=False)

    return load


def read_safetensors(path: Path) -> list[TensorRef]:
    """Parse the header and memory-map each tensor in place (bfloat16/float8 as their bits).

    The format is an 8-byte little-endian header length, a JSON header
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` and the raw
    little-endian data. Memory-mapping it directly reads one tensor at a time
    without the ``safetensors`` package, with zero copies, and also reads
    bfloat16, which ``safe_open(framework="numpy")`` cannot.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise CLIError(f"cannot read {path} as .safetensors: file too short")
        (n_header,) = struct.unpack("<Q", head)
        if n_header > size - 8 or n_header > 100_000_000:
            raise CLIError(f"cannot read {path} as .safetensors: invalid header length {n_header}")
        try:
            header = json.loads(f.read(n_header))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CLIError(f"cannot read {path} as .safetensors: header is not JSON ({_one_line(exc)})") from exc
    if not isinstance(header, dict):
        raise CLIError(f"cannot read {path} as .safetensors: header is not a JSON object")
    data_start = 8 + n_header
    refs = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            tag = entry["dtype"]
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (TypeError, KeyError, ValueError) as exc:
            raise CLIError(f"cannot read {path} as .safetensors: bad header entry for {name!r}") from exc
        if tag not in _TAG_TO_NP:
            raise CLIError(f"tensor {name!r} in {path} has dtype {tag}, which transmask cannot read")
        dt = _TAG_TO_NP[tag]
        if end - begin != math.prod(shape) * dt.itemsize or data_start + end > size or begin < 0:
            raise CLIError(f"cannot read {path} as .safetensors: tensor {name!r} lies outside the file or has the wrong size")
        refs.append(TensorRef(name, shape, tag, _safetensors_loader(path, dt, data_start + begin, shape)))
    refs.sort(key=lambda r: header[r.name]["data_offsets"][0])  # file order: sequential reads
    return refs


def _safetensors_loader(path: Path, dt: np.dtype, offset: int, shape: tuple[int, ...]):
    def load() -> np.ndarray:
        if math.prod(shape) == 0:
            return np.empty(shape, dt)
        return np.memmap(path, dtype=dt, mode="r", offset=offset, shape=shape)

    return load


_TORCH_TAGS = {
    "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float32": "F32", "torch.float64": "F64",
    "torch.bool": "BOOL", "torch.uint8": "U8", "torch.int8": "I8", "torch.int16": "I16",
    "torch.int32": "I32", "torch.int64": "I64", "torch.float8_e4m3fn": "F8_E4M3", "torch.float8_e5m2": "F8_E5M2",
}


def read_torch(path: Path) -> list[TensorRef]:
    """A torch ``state_dict`` (nested dicts flattened with dots), memory-mapped where torch allows."""
    from ._optional import require

    torch = require("torch", "reading torch checkpoints (.pt/.pth/.bin)")
    try:
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:
        # mmap needs the zip-based format (torch >= 1.6); legacy files are read into memory.
        if "mmap" not in str(exc).lower() and "zip" not in str(exc).lower():
            raise CLIError(f"cannot read {path} as a torch checkpoint: {_one_line(exc)}") from exc
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc2:
            raise CLIError(f"cannot read {path} as a torch checkpoint: {_one_line(exc2)}") from exc2
        print(f"{PROG}: note: {path} is not memory-mappable (legacy torch format); it was read into memory", file=sys.stderr)
    refs: list[TensorRef] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            refs.append(_torch_ref(prefix or path.stem, value))
        elif isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, (list, tuple)):
            for i, sub in enumerate(value):
                walk(f"{prefix}.{i}" if prefix else str(i), sub)
        # other values (epoch counters, config strings) carry no weights: ignored

    walk("", obj)
    return refs


def _torch_ref(name: str, t) -> TensorRef:
    tag = _TORCH_TAGS.get(str(t.dtype), str(t.dtype))

    def load() -> np.ndarray:
        import torch

        x = t.detach()
        if x.layout != torch.strided or x.is_quantized:
            raise CLIError(f"tensor {name!r} is sparse or quantized; only dense tensors are supported")
        if tag in _BITS_ONLY_TAGS:
            x = x.view({2: torch.int16, 1: torch.uint8}[x.element_size()])
            return x.numpy().view(_TAG_TO_NP[tag])
        try:
            return x.numpy()
        except TypeError as exc:
            raise CLIError(f"tensor {name!r} has dtype {t.dtype}, which numpy cannot hold") from exc

    return TensorRef(name, tuple(t.shape), tag, load)


_READERS = {"npy": read_npy, "npz": read_npz, "safetensors": read_safetensors, "torch": read_torch}


def read_checkpoint(path: Path) -> list[TensorRef]:
    if not path.exists():
        raise CLIError(f"no such file: {path}")
    if path.is_dir():
        raise CLIError(f"{path} is a directory; pass a checkpoint file")
    refs = _READERS[_checkpoint_format(path)](path)
    if not refs:
        raise CLIError(f"{path} holds no tensors")
    return refs


# --------------------------------------------------------------------------------------
# Writers: every output goes to a temporary file next to its target; finish() completes it,
# publish() renames it into place, abort() deletes it. safetensors and npz are streamed one
# tensor at a time (nothing is held in memory); torch outputs are collected and saved by finish().
# --------------------------------------------------------------------------------------
def _output_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower()
    return {".npz": "npz", ".npy": "npy", ".pt": "pt", ".pth": "pt", ".bin": "pt"}.get(suffix, "safetensors")


class _Output:
    """Base: a temporary file in the target's directory, renamed into place by publish()."""

    def __init__(self, path: Path):
        self.path = path
        directory = path.parent
        if not directory.is_dir():
            raise CLIError(f"output directory {directory} does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        os.close(fd)
        self.tmp = Path(tmp)

    def write(self, name: str, arr: np.ndarray, tag: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self) -> None:
        pass

    def finish(self) -> None:
        """Complete the temporary file (everything but the rename)."""
        self._finish()
        # mkstemp creates the file 0600; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)

    def publish(self) -> None:
        """Rename the finished temporary file into place."""
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._close_quietly()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def _close_quietly(self) -> None:
        pass


def _le_contiguous(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr)


class SafetensorsOutput(_Output):
    """Streams a .safetensors file: the header (all names, dtypes, shapes) first, then the data in order."""

    def __init__(self, path: Path, entries: list[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str]):
        super().__init__(path)
        header: dict = {"__metadata__": metadata} if metadata else {}
        offset = 0
        self._order = []
        for name, tag, shape in entries:
            if tag not in _TAG_TO_NP:
                raise CLIError(f"tensor {name!r} has dtype {tag}, which safetensors cannot store; write .npz instead")
            nbytes = math.prod(shape) * _TAG_TO_NP[tag].itemsize
            header[name] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._order.append((name, nbytes))
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the reference writer pads the header to 8 bytes
        self._f = open(self.tmp, "wb")
        self._f.write(struct.pack("<Q", len(blob)))
        self._f.write(blob)
        self._next = 0

    def write(self, name: str, arr: np.ndarray, tag: str) -> None:
        expected, nbytes = self._order[self._next]
        assert name == expected, (name, expected)
        data = _le_contiguous(arr)
        assert data.nbytes == nbytes, (name, data.nbytes, nbytes)
        if nbytes:
            self._f.write(memoryview(data.reshape(-1)).cast("B"))
        self._next += 1

    def _finish(self) -> None:
        assert self._next == len(self._order), "not every tensor was written"
        self._f.close()

    def _close_quietly(self) -> None:
        self._f.close()


def _numpy_storable(arr: np.ndarray, tag: str, name: str) -> np.ndarray:
    if tag == "BF16":
        return _to_float(arr, tag)  # numpy has no bfloat16: stored widened to float32
    if tag in _BITS_ONLY_TAGS:
        raise CLIError(f"tensor {name!r} has dtype {tag}, which .npz/.npy cannot store; write .safetensors instead")
    return arr


class NpzOutput(_Output):
    """Streams an uncompressed .npz (as ``np.savez``), one member at a time."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._zf = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)

    def write(self, name: str, arr: np.ndarray, tag: str) -> None:
        arr = _numpy_storable(arr, tag, name)
        with self._zf.open(name + ".npy", "w", force_zip64=True) as fp:
            np.lib.format.write_array(fp, np.asanyarray(arr), allow_pickle=False)

    def _finish(self) -> None:
        self._zf.close()

    def _close_quietly(self) -> None:
        self._zf.close()


class NpyOutput(_Output):
    """A single .npy array (only when exactly one tensor is written)."""

    def __init__(self, path: Path, count: int):
        if count != 1:
            raise CLIError(f"{path}: a .npy file holds one array but {count} tensors would be written; use .safetensors or .npz")
        super().__init__(path)
        self._written = False

    def write(self, name: str, arr: np.ndarray, tag: str) -> None:
        arr = _numpy_storable(arr, tag, name)
        with open(self.tmp, "wb") as f:
            np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
        self._written = True


class TorchOutput(_Output):
    """A torch ``state_dict`` file (``torch.save``); built in memory and saved by finish()."""

    def __init__(self, path: Path):
        from ._optional import require

        self._torch = require("torch", "writing torch checkpoints (.pt/.pth/.bin)")
        super().__init__(path)
        self._tensors: dict = {}

    def write(self, name: str, arr: np.ndarray, tag: str) -> None:
        torch = self._torch
        t = torch.from_numpy(np.array(arr, copy=True, order="C"))  # own, writable memory
        if tag == "BF16":
            t = t.view(torch.bfloat16)
        elif tag == "F8_E4M3":
            t = t.view(torch.float8_e4m3fn)
        elif tag == "F8_E5M2":
            t = t.view(torch.float8_e5m2)
        self._tensors[name] = t

    def _finish(self) -> None:
        self._torch.save(self._tensors, self.tmp)
        self._tensors.clear()


def _open_output(path: Path, fmt: str, entries, metadata) -> _Output:
    if fmt == "safetensors":
        return SafetensorsOutput(path, entries, metadata)
    if fmt == "npz":
        return NpzOutput(path)
    if fmt == "npy":
        return NpyOutput(path, len(entries))
    return TorchOutput(path)


# --------------------------------------------------------------------------------------
# `transmask mask`
# --------------------------------------------------------------------------------------
def _select(refs: list[TensorRef], args) -> tuple[list[TensorRef], list[tuple[str, str]]]:
    selected, skipped = [], []
    for ref in refs:
        reason = None
        if args.include and not any(fnmatch.fnmatchcase(ref.name, g) for g in args.include):
            reason = "not matched by --include"
        elif any(fnmatch.fnmatchcase(ref.name, g) for g in args.exclude):
            reason = "matched by --exclude"
        elif ref.dtype not in _FLOAT_TAGS:
            reason = f"dtype {ref.dtype} is not floating point"
        elif len(ref.shape) < 2:
            reason = f"{len(ref.shape)}-D"
        elif len(ref.shape) > 5:
            reason = f"{len(ref.shape)}-D (neither a matrix nor a conv weight)"
        elif len(ref.shape) > 2 and args.no_conv:
            reason = "conv weight (--no-conv)"
        elif ref.numel < args.min_numel:
            reason = f"{ref.numel} < --min-numel {args.min_numel} elements"
        elif ref.numel == 0:
            reason = "empty"
        if reason:
            skipped.append((ref.name, reason))
        else:
            selected.append(ref)
    return selected, skipped


def _progress(total: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety; no tqdm, no bar
        return None
    return tqdm(total=total, unit="w", unit_scale=True, file=sys.stderr, desc="masking", leave=False, dynamic_ncols=True)


def _fmt_shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt_valid(valid) -> str:
    return "-" if valid is None else ("yes" if valid else "NO")


def _print_table(rows: list[dict], total: dict, file) -> None:
    header = ("tensor", "shape", "kept L1", "density", "valid", "time")
    lines = [
        (r["name"], _fmt_shape(r["shape"]) + (f" ({_fmt_shape(r['view_shape'])})" if r["view_shape"] != r["shape"] else ""),
         f"{100 * r['kept_fraction_l1']:.2f}%", f"{r['density']:.4f}", _fmt_valid(r["valid"]), _fmt_time(r["time_s"]))
        for r in rows
    ]
    lines.append(
        ("total", f"{total['numel']:,} weights", f"{100 * total['kept_fraction_l1']:.2f}%", f"{total['density']:.4f}",
         _fmt_valid(total["valid"]), _fmt_time(total["time_s"]))
    )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    right = (False, False, True, True, False, True)

    def fmt(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    print(fmt(header), file=file)
    print(rule, file=file)
    for line in lines[:-1]:
        print(fmt(line), file=file)
    print(rule, file=file)
    print(fmt(lines[-1]), file=file)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def cmd_mask(args) -> int:
    from .masks import is_nm, is_transposable, nm_mask, optimal_mask

    n, m = _checked_nm(args.n, args.m)
    checkpoint = Path(args.checkpoint)
    out = Path(args.output)
    pruned = Path(args.pruned) if args.pruned else None
    for target in filter(None, (out, pruned)):
        if _same_file(target, checkpoint):
            raise CLIError(f"output {target} would overwrite the checkpoint being read", EXIT_USAGE)
        if target.is_dir():
            raise CLIError(f"output {target} is a directory; name a file", EXIT_USAGE)
    if pruned is not None and _same_file(out, pruned):
        raise CLIError("-o and --pruned name the same file", EXIT_USAGE)
    if args.threads is not None:
        if args.threads < 1:
            raise CLIError(f"--threads must be at least 1, got {args.threads}", EXIT_USAGE)
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))

    refs = read_checkpoint(checkpoint)
    selected, skipped = _select(refs, args)
    if not selected:
        raise CLIError(
            f"no tensor of {checkpoint} was selected ({len(refs)} tensors; "
            "check --include/--exclude/--min-numel, or use -v to see why each was skipped)"
        )
    transposable = not args.no_transposable
    pattern = f"{n}:{m} {'transposable' if transposable else 'row-wise'}"
    metadata = {
        "format": "transmask masks",
        "n": str(n), "m": str(m),
        "transposable": str(transposable).lower(),
        "method": args.method if transposable else "nm_mask",
        "keep": args.keep if transposable else "exactly",  # nm_mask keeps n of every full group
        "conv_2d_view": "(out, in, *kernel) -> (out, prod(kernel) * in), channels last",
        "source": checkpoint.name,
    }

    selected_names = {r.name for r in selected}
    mask_entries = [(r.name, "BOOL", r.shape) for r in selected]
    outputs: list[_Output] = []
    rows: list[dict] = []
    warmed: set = set()
    bar = None
    try:
        mask_out = _open_output(out, _output_format(out, args.format), mask_entries, metadata)
        outputs.append(mask_out)
        pruned_out = None
        if pruned is not None:
            pruned_entries = [(r.name, r.dtype, r.shape) for r in refs]
            pruned_out = _open_output(pruned, _output_format(pruned, None), pruned_entries,
                                      {"format": "transmask pruned", **{k: v for k, v in metadata.items() if k != "format"}})
            outputs.append(pruned_out)

        bar = _progress(sum(r.numel for r in selected), args.quiet)
        # Selected tensors in file order; with --pruned every tensor, also in file order.
        for ref in refs if pruned_out is not None else selected:
            raw = ref.load()
            if ref.name not in selected_names:
                pruned_out.write(ref.name, raw, ref.dtype)
                continue
            if bar is not None:
                bar.set_postfix_str(ref.name, refresh=False)
            W = _to_float(raw, ref.dtype)
            W2 = weight_to_2d(W)
            warm_dtype = np.float64 if W2.dtype == np.float64 else np.float32
            if warm_dtype not in warmed:  # compile/load the Numba kernels outside the timed region
                warmed.add(warm_dtype)
                with contextlib.suppress(Exception):
                    tiny = np.arange(1, m * m + 1, dtype=warm_dtype).reshape(m, m)
                    optimal_mask(tiny, n, m, method=args.method, keep=args.keep) if transposable else nm_mask(tiny, n, m)
            t0 = time.perf_counter()
            try:
                if transposable:
                    mask2 = optimal_mask(W2, n, m, method=args.method, keep=args.keep)
                else:
                    mask2 = nm_mask(W2, n, m)
            except (ValueError, TypeError) as exc:
                msg = _one_line(exc)  # "W contains 1 NaN ..." -> "tensor 'x' contains 1 NaN ..."
                raise CLIError(f"tensor {ref.name!r} {msg[2:]}" if msg.startswith("W ") else f"tensor {ref.name!r}: {msg}") from exc
            elapsed = time.perf_counter() - t0
            kept = int(np.count_nonzero(mask2))
            # kept/total L1 in one pass over |W| (mask_stats would also recount every tile)
            absW = np.abs(W2)
            total_l1 = float(absW.sum(dtype=np.float64))
            kept_l1 = float(absW.sum(dtype=np.float64, where=mask2))
            del absW
            if args.no_check:
                valid = None
            elif transposable:
                valid = is_transposable(mask2, n, m, keep=args.keep)
            else:
                valid = is_nm(mask2, n, m, keep="exactly")
            if valid is False:  # a solver bug; refuse to write a mask that breaks the pattern
                raise CLIError(f"tensor {ref.name!r}: the {metadata['method']} solver returned a mask that is not {pattern}; "
                               "please report this")
            mask = view_to_weight(mask2, ref.shape)
            mask_out.write(ref.name, mask, "BOOL")
            if pruned_out is not None:
                pruned_out.write(ref.name, np.where(mask, raw, np.zeros((), raw.dtype)), ref.dtype)
            rows.append({
                "name": ref.name, "shape": list(ref.shape), "view_shape": list(W2.shape), "dtype": ref.dtype,
                "kept_l1": kept_l1, "total_l1": total_l1,
                "kept_fraction_l1": kept_l1 / total_l1 if total_l1 > 0 else 1.0,
                "density": kept / W2.size, "kept": kept, "valid": valid, "time_s": elapsed,
            })
            del raw, W, W2, mask2, mask
            if bar is not None:
                bar.update(ref.numel)
        if bar is not None:
            bar.close()
            bar = None
        for o in outputs:  # finish every output before renaming any, so a failure leaves none
            o.finish()
        for o in outputs:
            o.publish()
    except BaseException:
        if bar is not None:
            bar.close()
        for o in outputs:
            o.abort()
        raise

    kept_l1 = sum(r["kept_l1"] for r in rows)
    total_l1 = sum(r["total_l1"] for r in rows)
    numel = sum(math.prod(r["shape"]) for r in rows)
    total = {
        "numel": numel, "kept_l1": kept_l1, "total_l1": total_l1,
        "kept_fraction_l1": kept_l1 / total_l1 if total_l1 > 0 else 1.0,
        "density": sum(r["kept"] for r in rows) / numel,
        "valid": None if args.no_check else all(r["valid"] for r in rows), "time_s": sum(r["time_s"] for r in rows),
    }
    if args.json:
        json.dump({
            "checkpoint": str(checkpoint), "output": str(out), "pruned": str(pruned) if pruned else None,
            "n": n, "m": m, "transposable": transposable, "method": metadata["method"], "keep": metadata["keep"],
            "tensors": rows, "total": total, "skipped": [{"name": s, "reason": r} for s, r in skipped],
        }, sys.stdout, indent=2)
        print()
    else:
        how = f"method={args.method}, keep={args.keep}" if transposable else "nm_mask"
        print(f"{checkpoint.name}: {pattern} masks ({how}) for {len(rows)} of {len(refs)} tensors")
        _print_table(rows, total, sys.stdout)
        if skipped:
            print(f"skipped {len(skipped)} tensor(s)" + (":" if args.verbose else " (-v lists them)"))
            if args.verbose:
                for name, reason in skipped:
                    print(f"  {name}: {reason}")
        print(f"masks written to {out}" + (f"; pruned checkpoint written to {pruned}" if pruned else ""))
    return EXIT_OK


def _checked_nm(n, m) -> tuple[int, int]:
    from ._validation import check_nm

    try:
        return check_nm(n, m)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"invalid -n/-m: {_one_line(exc)}", EXIT_USAGE) from exc


# --------------------------------------------------------------------------------------
# `transmask diversity`, `bench`, `demo`
# --------------------------------------------------------------------------------------
def cmd_diversity(args) -> int:
    n, m = _checked_nm(args.n, args.m)
    rows, cols = args.size
    if rows < 1 or cols < 1:
        raise CLIError(f"--size must be positive, got {rows} {cols}", EXIT_USAGE)
    from . import diversity

    try:
        table = diversity.md_table((rows, cols), ((n, m),), structures=("unstructured", "nm", "transposable"),
                                   block_sizes=())
    except (ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: CountTooExpensiveError
        raise CLIError(f"diversity: {_one_line(exc)}", EXIT_USAGE) from exc
    if args.json:
        json.dump({"n": n, "m": m, "size": [rows, cols], "rows": table}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    print(f"mask diversity of a {rows} x {cols} matrix keeping {n} of every {m} (density {n / m:.4g}):")
    labels = {"unstructured": "unstructured", "nm": f"{n}:{m}", "transposable": f"{n}:{m} transposable"}
    cells = [(labels[r["structure"]], ("~" if not r["exact_log10"] else "") + f"{r['log10_md']:,.1f}",
              f"{r['log10_md_per_weight']:.4f}") for r in table]
    header = ("structure", "log10 MD", "per weight")
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("  ".join((h.ljust if i == 0 else h.rjust)(w) for i, (h, w) in enumerate(zip(header, widths))))
    for c in cells:
        print("  ".join((x.ljust if i == 0 else x.rjust)(w) for i, (x, w) in enumerate(zip(c, widths))))
    if any(not r["exact_log10"] for r in table):
        print("~ log10 K(m, n) from the Canfield-McKay asymptotic formula (the exact count is too costly)")
    return EXIT_OK


def _bench_script() -> Path | None:
    script = Path(__file__).resolve().parent.parent / "bench" / "solvers.py"
    return script if script.is_file() else None


def cmd_bench(argv: list[str]) -> int:
    script = _bench_script()
    if script is None:
        raise CLIError(
            "the solver bench (bench/solvers.py) is not installed with the package; "
            "run it from a source checkout of transmask: python bench/solvers.py"
        )
    env = dict(os.environ)
    root = str(script.parent.parent)  # so the bench imports this very transmask
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.call([sys.executable, str(script), *argv], env=env)


def cmd_demo(argv: list[str]) -> int:
    import importlib

    demo = importlib.import_module(f"{__package__}.demo")
    rc = demo.main(list(argv))
    return int(rc) if isinstance(rc, int) else EXIT_OK


# --------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (``transmask mask: error: ...``) with exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_MASK_EPILOG = """\
formats:
  input   .npy (one array, memory-mapped; named after the file), .npz (uncompressed members
          memory-mapped; members of np.savez_compressed files are decompressed one at a time,
          since compressed zip members cannot be mapped), .safetensors (memory-mapped, bf16
          widened to float32 per tensor), torch state_dicts .pt/.pth/.bin/.ckpt (torch.load with
          mmap=True, weights_only=True; nested dicts flattened with dots, so a training
          checkpoint's optimizer state shows up too: select with --include 'model.*' or
          --exclude 'optimizer*').
  output  by the suffix of OUT: .safetensors (default for any other suffix), .npz, .npy (one
          tensor only), .pt/.pth/.bin. Masks are bool tensors named like the weights, in the
          weights' original shape; the safetensors metadata records n, m, method and keep.
          safetensors and .npz outputs are streamed one tensor at a time; torch outputs are
          built in memory. Outputs are written to a temporary file and renamed into place when
          every tensor succeeded.
  pruned  --pruned writes every tensor of the checkpoint, masked ones multiplied by their mask,
          in their original dtypes (bf16 as float32 in .npz/.npy); nested torch dicts come out
          flat, with dotted names.

which tensors:
  floating-point tensors (f16, bf16, f32, f64) that are 2-D, or conv weights (3-D to 5-D), with
  at least --min-numel elements, whose names match an --include glob (when any is given) and
  no --exclude glob (fnmatch syntax, e.g. '*.attn.*' or 'model.layers.*.mlp.*'). A 2-D weight
  is masked as stored, rows = first dimension (nn.Linear's (out, in)); for weights stored
  (in, out), like GPT-2's Conv1D, a transposable mask suits both orientations but
  --no-transposable groups along the other dimension.

conv weights:
  a conv weight (out, in, *kernel) is masked in the channels-last 2-D view
  (out, prod(kernel) * in), i.e. w.permute(0, 2, 3, 1).reshape(out, -1) for a Conv2d; groups of m
  are m input channels at one kernel position. The mask is written back in the original
  (out, in, *kernel) shape.

conventions:
  n is the number KEPT of every m (2:4 keeps 2 of 4). Transposable masks keep n per row and per
  column of every m x m tile, so W and W.T are both n:m sparse. The table's "kept L1" is the
  fraction of |W| kept, "valid" checks the pattern ("-" with --no-check), "time" is the
  solver's time (after a warm-up call that compiles or loads the Numba kernels).

exit status: 0 success, 1 failure (missing file, unknown format, NaN in a tensor, ...; no output
  file is left behind), 2 bad arguments, 130 interrupted.

example:
  transmask mask model.safetensors -n 2 -m 4 --exclude '*embed*' -o masks.safetensors
"""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .solvers import REGISTRY

    parser = _Parser(
        prog=PROG,
        description="Exact and approximate N:M transposable sparsity masks (n = number kept of every m).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "mask", help="compute masks for every weight of a checkpoint",
        description="Compute an N:M (by default transposable) mask for every selected weight of a checkpoint,\n"
                    "reading one tensor at a time, and write the masks (and optionally the pruned checkpoint).",
        epilog=_MASK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .npy, .npz, .safetensors or torch .pt/.pth/.bin file")
    p.add_argument("-n", type=int, default=2, help="weights kept of every m (default 2)")
    p.add_argument("-m", type=int, default=4, help="group size and tile side (default 4)")
    p.add_argument("--method", choices=sorted(REGISTRY), default="exact",
                   help="solver: exact (optimal, default), approx (the paper's 2-approximation), lp (slow reference)")
    p.add_argument("--keep", choices=("exactly", "at_most"), default="exactly",
                   help="keep exactly n (density n/m, default) or at most n per tile-row/column")
    p.add_argument("--no-transposable", action="store_true",
                   help="plain row-wise N:M masks (transmask.nm_mask) instead of transposable ones")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="where to write the masks; the format follows the suffix (.safetensors by default)")
    p.add_argument("--format", choices=("safetensors", "npz", "npy", "pt"),
                   help="format of OUT, overriding its suffix")
    p.add_argument("--pruned", metavar="PATH",
                   help="also write the checkpoint with the masked weights zeroed (every tensor, original dtypes; "
                        "format by suffix)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="mask only tensors whose name matches GLOB (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="do not mask tensors whose name matches GLOB (repeatable)")
    p.add_argument("--min-numel", type=int, default=4096, metavar="K",
                   help="skip tensors with fewer than K elements (default 4096)")
    p.add_argument("--no-conv", action="store_true", help="skip conv weights (3-D to 5-D tensors)")
    p.add_argument("--no-check", action="store_true",
                   help="skip checking each mask's pattern (is_transposable / is_nm); saves about a solve's time")
    p.add_argument("--threads", type=int, metavar="T", help="Numba threads for the solvers (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the per-tensor results as JSON instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="list the skipped tensors and why")
    p.set_defaults(func=cmd_mask)

    d = sub.add_parser(
        "diversity", help="print the mask diversity of unstructured, N:M and transposable N:M masks",
        description="Mask diversity (Hubara et al. 2021): the number of masks a structure allows at the same "
                    "sparsity, printed as log10, for unstructured, row-wise N:M and transposable N:M masks.",
    )
    d.add_argument("-n", type=int, default=4, help="weights kept of every m (default 4)")
    d.add_argument("-m", type=int, default=8, help="group size and tile side (default 8)")
    d.add_argument("--size", type=int, nargs=2, default=(4096, 4096), metavar=("ROWS", "COLS"),
                   help="matrix size (default 4096 4096)")
    d.add_argument("--json", action="store_true", help="print the rows of transmask.diversity.md_table as JSON")
    d.set_defaults(func=cmd_diversity)

    # bench and demo pass their arguments through untouched (see main).
    sub.add_parser("bench", help="run the solver bench (bench/solvers.py of a source checkout; e.g. --quick)",
                   add_help=False)
    sub.add_parser("demo", help="the README's demo: every method on a random matrix", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``transmask`` command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":
            return cmd_bench(argv[1:])
        if argv and argv[0] == "demo":
            return cmd_demo(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return args.func(args)
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except ImportError as exc:  # a missing optional dependency, with its install hint
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except SystemExit as exc:  # argparse's --help/--version/usage errors, sys.exit in the demo
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        print(exc.code, file=sys.stderr)  # SystemExit("message"), as the interpreter would
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, MemoryError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
