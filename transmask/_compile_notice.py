"""A one-line notice on stderr while Numba compiles transmask's kernels for the first time.

Numba compiles a kernel on its first call with new argument types and caches
the machine code on disk (``cache=True``); a cold first call can take a
quarter of a minute per solver, silently. The public functions announce what
they are about to run (:func:`describing`), and a listener on Numba's
``numba:compile`` event, which fires only on a cache miss, prints one line
for it the first time a transmask kernel actually compiles, e.g.

    transmask: compiling the exact solver's kernels for float32 once (about 15 s); later runs load them from the cache

Nothing is printed on warm runs (kernels loaded from the cache), nothing on
stdout, and each description at most once per process. The estimates were
measured on a 2-core machine with an empty cache (``NUMBA_CACHE_DIR`` set to a
new folder): exact 2:4 about 5 s, exact 4:8 about 17 s, approximation about
16 s, row-wise N:M 6 s (CPU), mask checks 1 s.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
import threading

from numba.core import event

#: What the running public call will compile, as ``(description, estimated seconds)``.
_current: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("transmask_compiling", default=None)
_announced: set[str] = set()
_lock = threading.Lock()
_nesting = threading.local()  # compilations in progress in this thread (a kernel compiles the functions it calls)


@contextlib.contextmanager
def describing(what: str, seconds: int):
    """Within this block, a first compilation of a transmask kernel is announced as ``what`` (about ``seconds``)."""
    token = _current.set((what, seconds))
    try:
        yield
    finally:
        _current.reset(token)


class _Notice(event.Listener):
    def on_start(self, ev):
        depth = getattr(_nesting, "depth", 0)
        _nesting.depth = depth + 1
        func = getattr(ev.data.get("dispatcher"), "py_func", None)
        if depth or func is None or not getattr(func, "__module__", "").startswith("transmask"):
            return  # only the outermost compilation speaks: its callees compile inside it
        what, seconds = _current.get() or ("kernels", 10)
        args = ev.data.get("args") or ()
        dtype = getattr(args[0], "dtype", None) if args else None  # kernels take the matrix first
        if dtype is not None:
            what = f"{what} for {dtype}"
        with _lock:
            if what in _announced:
                return
            _announced.add(what)
        print(f"transmask: compiling the {what} once (about {seconds} s); later runs load them from the cache",
              file=sys.stderr, flush=True)

    def on_end(self, ev):
        _nesting.depth = max(0, getattr(_nesting, "depth", 1) - 1)


event.register("numba:compile", _Notice())
