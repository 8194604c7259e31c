"""What every checkpoint format shares: tensor references, dtype tags, one-line errors, name rules.

A checkpoint is read as a list of :class:`TensorRef`: name, shape and dtype are
known at once (from the file's header), the data is read only by
:meth:`TensorRef.load`, one tensor at a time, memory-mapped where the format
allows.

dtypes travel as **safetensors tags** (``"F32"``, ``"BF16"``, ``"I64"``, ...),
the one vocabulary every format here can be mapped to; a numpy dtype that
safetensors has no tag for keeps numpy's ``dtype.str`` (``"<c16"``).
Types numpy lacks (bfloat16, the float8 family) are loaded as unsigned integers
of the same width holding the bits; :func:`to_float` widens bfloat16 to float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable

import numpy as np

__all__ = [
    "CheckpointError", "CheckpointNote", "TensorRef", "TAG_DTYPES", "FLOAT_TAGS", "BITS_ONLY_TAGS",
    "dtype_tag", "tag_dtype", "to_float", "check_shape", "check_unique_names", "one_line", "quote",
    "reject_duplicate_keys",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or an output that cannot be written; the message is one line."""


class CheckpointNote(UserWarning):
    """Something a reader did that the user should hear about (a legacy file read into memory, ...)."""


def one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors can be long)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def quote(name: str, limit: int = 80) -> str:
    """``repr`` of a name from a file, shortened: control characters escaped, so a message stays one line."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def reject_duplicate_keys(pairs) -> dict:
    """``object_pairs_hook`` for ``json.loads``: a key given twice is an error, not "the last one wins"."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"key {quote(key)} appears twice")
        obj[key] = value
    return obj


# safetensors tag -> numpy dtype holding the data (bit containers for types numpy lacks)
TAG_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"), "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
    # bit containers for types numpy has no dtype for
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("<u1"), "F8_E5M2": np.dtype("<u1"), "F8_E8M0": np.dtype("<u1"),
    "F8_E4M3FNUZ": np.dtype("<u1"), "F8_E5M2FNUZ": np.dtype("<u1"),
}
FLOAT_TAGS = ("F16", "BF16", "F32", "F64")
BITS_ONLY_TAGS = ("BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ")

# numpy's limits: at most 64 dimensions, and the byte size (zero dimensions
# counted as one) must fit in a signed 64-bit integer.
MAX_NDIM = 64
_MAX_BYTES = 2**63 - 1


def dtype_tag(dt: np.dtype) -> str:
    """The safetensors tag of a numpy dtype, or numpy's ``dtype.str`` when safetensors has none."""
    for tag, ndt in TAG_DTYPES.items():
        if tag not in BITS_ONLY_TAGS and dt.kind == ndt.kind and dt.itemsize == ndt.itemsize:
            return tag
    return dt.str


def tag_dtype(tag: str) -> np.dtype:
    """The numpy dtype that holds a tensor of dtype ``tag`` (a safetensors tag or a numpy ``dtype.str``)."""
    if tag in TAG_DTYPES:
        return TAG_DTYPES[tag]
    return np.dtype(tag)


def to_float(raw: np.ndarray, tag: str) -> np.ndarray:
    """A native, aligned float view (or copy) of a floating tensor; bfloat16 bits widened to float32."""
    if tag == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    if not raw.flags.aligned:  # safetensors/npz offsets need not be aligned; compiled code wants them aligned
        raw = raw.copy()
    return raw


def check_shape(shape, itemsize: int, what: str) -> tuple[int, ...]:
    """``shape`` as a tuple of ints after checking that numpy can hold it (else a CheckpointError on ``what``)."""
    dims = tuple(shape)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise CheckpointError(f"{what}: shape {list(dims)[:8]} is not a list of non-negative integers")
    if len(dims) > MAX_NDIM:
        raise CheckpointError(f"{what}: {len(dims)} dimensions; numpy holds at most {MAX_NDIM}")
    if math.prod(max(d, 1) for d in dims) * max(itemsize, 1) > _MAX_BYTES:
        raise CheckpointError(f"{what}: shape {list(dims)} is too large for numpy (more than 2**63 bytes)")
    return dims


@dataclass(frozen=True)
class TensorRef:
    """One tensor of a checkpoint: name, shape and dtype at once, the data on :meth:`load`.

    Attributes
    ----------
    name : str
        The tensor's name (nested torch dicts flattened with dots).
    shape : tuple of int
    dtype : str
        safetensors tag (``"F32"``, ``"BF16"``, ...) or numpy's ``dtype.str``.
    source : str
        Where it is stored (file, and member or shard), for messages.
    storage : hashable or None
        Identifies the stored bytes: two references with the same key share
        their data (tied weights saved once in a torch file). ``None`` when unknown.
    unreadable : str or None
        Why the data cannot be read at all (e.g. ``"is on the meta device (holds no data)"``);
        such a tensor is listed but never masked or written.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str
    read: Callable[[], np.ndarray] = field(repr=False, compare=False)
    storage: Hashable | None = field(default=None, compare=False)
    unreadable: str | None = None

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    def load(self) -> np.ndarray:
        """The data as a numpy array (memory-mapped where possible; bfloat16/float8 as their bits)."""
        if self.unreadable:
            raise CheckpointError(f"tensor {quote(self.name)} of {self.source} {self.unreadable}")
        try:
            arr = self.read()
        except (CheckpointError, MemoryError):
            raise
        except Exception as exc:  # truncated members, bad compression, I/O errors inside a mapping
            raise CheckpointError(f"cannot read tensor {quote(self.name)} of {self.source}: {one_line(exc)}") from exc
        if tuple(arr.shape) != self.shape:
            raise CheckpointError(f"tensor {quote(self.name)} of {self.source} holds shape {arr.shape}, "
                                  f"its header says {self.shape}")
        return arr


def check_unique_names(named: Iterable[tuple[str, str]], where: str) -> None:
    """Refuse names that occur twice; ``named`` yields ``(name, origin)``, origin saying where each came from.

    Different keys can become one name: nested dict keys are joined with dots
    (``{'a': {'b': x}}`` and ``{'a.b': y}``), integer and string keys print alike
    (``{1: x, '1': y}``), a zip archive can hold two members of one name. A
    checkpoint written from them would silently lose one tensor.
    """
    first: dict[str, str] = {}
    for name, origin in named:
        if name in first:
            raise CheckpointError(
                f"{where}: two tensors would be named {quote(name)} "
                f"(from {first[name]} and {origin}); rename one, nothing was written")
        first[name] = origin
