"""Atomic outputs: a file appears complete under its name, or not at all.

Every output is written to a temporary file in the target's own directory (so
the final rename stays on one filesystem and is atomic), flushed to disk
(``fsync``), and renamed over the target only when everything succeeded; any
error, ``KeyboardInterrupt`` or exception raised by a signal handler on the
way deletes the temporary file instead. An existing target is untouched until
the rename, so a failed run keeps the previous file.

Refused targets: anything that exists and is not a regular file (a directory,
a FIFO, a device such as ``/dev/null``, a socket): renaming over it would
replace it with a regular file. Symbolic links are followed, so the link keeps
pointing at the new data.

The temporary name is ``.NAME.XXXXXXXX.tmp`` with long names shortened (a
prefix and a hash), so that it never exceeds the filesystem's limit on a name
(255 bytes) even where ``NAME`` itself just fits.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from .tensors import CheckpointError, check_unique_names, one_line, quote

__all__ = ["AtomicFile", "Entry", "TensorWriter", "OutputGroup", "check_output_path", "signals_deferred"]

# Temporary files created and neither renamed nor deleted yet; removed at interpreter exit as a last resort
# (the normal paths delete them themselves).
_PENDING: set[str] = set()

_MAX_PLAIN_PREFIX = 64  # bytes of the target's name kept as they are in the temporary name


def _remove_pending() -> None:
    for tmp in list(_PENDING):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _PENDING.discard(tmp)


atexit.register(_remove_pending)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_path(path) -> Path:
    """The real path an output named ``path`` is written to (symlinks followed).

    Raises
    ------
    CheckpointError
        If ``path`` exists and is not a regular file, or its directory does not exist.
    """
    given = Path(path)
    try:
        real = Path(os.path.realpath(given))
        st = os.stat(real)
    except FileNotFoundError:
        if not real.parent.is_dir():
            raise CheckpointError(f"output directory {given.parent} does not exist") from None
        return real
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise CheckpointError(f"cannot write {given}: {one_line(exc)}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"output {given} exists and is {_kind(st.st_mode)}; name a new file or a regular one")
    return real


def _temp_prefix(name: str) -> str:
    raw = os.fsencode(name)
    if len(raw) <= _MAX_PLAIN_PREFIX:
        return f".{name}."
    digest = hashlib.sha256(raw).hexdigest()[:12]
    head = raw[:40].decode("utf-8", "ignore")  # a cut multi-byte character is dropped
    return f".{head}~{digest}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFile:
    """A file written under a temporary name beside ``path`` and renamed over it by :meth:`publish`.

    Write to :attr:`file`; :meth:`sync` flushes it to disk and closes it,
    :meth:`publish` renames it into place; :meth:`discard` deletes it. Used as
    a context manager, it discards the temporary file unless it was published.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
    >>> with AtomicFile(target) as f:
    ...     _ = f.file.write(b"data")
    ...     f.sync(); f.publish()
    >>> target.read_bytes()
    b'data'
    """

    def __init__(self, path):
        self.path = Path(path)
        self.target = check_output_path(self.path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(self.target.name), suffix=".tmp", dir=self.target.parent)
        _PENDING.add(tmp)
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "w+b")
        self.published = False

    def sync(self) -> None:
        """Flush the temporary file to disk and close it (everything but the rename)."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it what open() would

    def publish(self) -> None:
        """Rename the synced temporary file over the target."""
        check_output_path(self.path)  # it may have become a directory or a FIFO meanwhile
        os.replace(self.tmp, self.target)
        _PENDING.discard(str(self.tmp))
        self.published = True
        with contextlib.suppress(OSError):  # make the rename itself durable; not every filesystem allows it
            dir_fd = os.open(self.target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def discard(self) -> None:
        """Close and delete the temporary file (nothing happens to the target)."""
        with contextlib.suppress(Exception):
            self.file.close()
        if not self.published:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
            _PENDING.discard(str(self.tmp))

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, *exc) -> None:
        if not self.published:
            with signals_deferred():
                self.discard()


class Entry(NamedTuple):
    """A tensor an output will hold: its name, dtype tag and shape (a :class:`TensorRef` also fits)."""

    name: str
    dtype: str
    shape: tuple


class TensorWriter:
    """Base of the format writers: check everything, then write tensors one by one into an :class:`AtomicFile`.

    The constructor validates every entry (names the format stores faithfully,
    dtypes it can hold, unique names) *before* the temporary file exists, so a
    refused output leaves nothing behind. Then :meth:`write` takes the tensors
    in the order of ``entries``, :meth:`finish` completes and syncs the file,
    :meth:`publish` renames it into place, :meth:`abort` deletes it.
    """

    format = ""

    def __init__(self, path, entries, metadata: dict[str, str] | None = None):
        self.path = Path(path)
        entries_list = list(entries)
        self.entries = [Entry(e.name, e.dtype, tuple(e.shape)) for e in entries_list]
        where = f"cannot write {self.path}"
        for e, given in zip(self.entries, entries_list):
            if not isinstance(e.name, str):
                raise CheckpointError(f"{where}: tensor name {e.name!r} is not a string")
            try:
                e.name.encode("utf-8")
            except UnicodeEncodeError:
                raise CheckpointError(f"{where}: tensor name {quote(e.name)} is not valid text "
                                      "(a lone surrogate)") from None
            problem = getattr(given, "unreadable", None)  # a TensorRef whose data cannot be read
            if problem:
                raise CheckpointError(f"{where}: tensor {quote(e.name)} {problem}")
        self.check_entries(self.entries, where)
        check_unique_names(((e.name, f"tensor #{i}") for i, e in enumerate(self.entries)), where)
        self.metadata = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise CheckpointError(f"{where}: metadata must map strings to strings")
        self._next = 0
        self._file = AtomicFile(self.path)
        try:
            self._start(self._file.file)
        except BaseException:
            self._file.discard()
            raise

    # --- what a format defines -----------------------------------------------------------------------
    def check_entries(self, entries: list[Entry], where: str) -> None:
        """Raise CheckpointError if the format cannot store these tensors faithfully (by default: each one)."""
        for e in entries:
            self.check_entry(e, where)

    def check_entry(self, entry: Entry, where: str) -> None:
        """Raise CheckpointError if the format cannot store ``entry`` faithfully (name, dtype, shape)."""

    def _start(self, f) -> None:
        """Write what comes before the tensors (e.g. a header)."""

    def _write(self, f, entry: Entry, arr: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finish(self, f) -> None:
        """Write what comes after the tensors."""

    def _close(self) -> None:
        """Release what the format holds open (called on abort too)."""

    # --- the protocol --------------------------------------------------------------------------------
    def write(self, name: str, arr: np.ndarray) -> None:
        """Write the next tensor (``entries`` order); ``arr`` holds its data (bit containers for bf16/float8)."""
        entry = self.entries[self._next]
        if name != entry.name or tuple(arr.shape) != entry.shape:
            raise RuntimeError(f"{self.path}: expected tensor {entry.name!r} {entry.shape}, got {name!r} {arr.shape}")
        self._write(self._file.file, entry, arr)
        self._next += 1

    def finish(self) -> None:
        """Complete the temporary file and flush it to disk (everything but the rename)."""
        if self._next != len(self.entries):
            raise RuntimeError(f"{self.path}: {len(self.entries) - self._next} tensor(s) were never written")
        self._finish(self._file.file)
        self._close()
        self._file.sync()

    def publish(self) -> None:
        self._file.publish()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
        self._file.discard()


class OutputGroup:
    """Several outputs that appear together or not at all.

    ``open()`` writers inside a ``with`` block and call :meth:`commit` at its
    end: every file is completed and synced before the first rename, and the
    renames run with SIGINT/SIGTERM held back. Leaving the block by an
    exception (or without commit) deletes every temporary file.
    """

    def __init__(self):
        self.writers: list[TensorWriter] = []

    def add(self, writer: TensorWriter) -> TensorWriter:
        self.writers.append(writer)
        return writer

    def commit(self) -> None:
        for w in self.writers:  # a failure here still leaves every target untouched
            w.finish()
        with signals_deferred():
            for w in self.writers:
                w.publish()

    def __enter__(self) -> "OutputGroup":
        return self

    def __exit__(self, *exc) -> None:
        with signals_deferred():
            for w in self.writers:
                w.abort()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends, so a rename or a cleanup is never cut in half.

    Only in the main thread (where Python runs signal handlers); a signal that
    arrived meanwhile is raised again, to its own handler, on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is None:  # installed outside Python: cannot be restored, leave it
            continue
        saved[sig] = handler
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)
