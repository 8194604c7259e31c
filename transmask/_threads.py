"""Numba's thread pool next to PyTorch's, and calls from several Python threads.

Imported by ``transmask/__init__.py`` before anything loads Numba.

**Spinning pools.** Numba's OpenMP pool and PyTorch's share ``libgomp``
(torch ships its own ``libgomp.so.1``; whichever loads first serves both).
With OpenMP's default wait policy, idle threads spin and starve the other
pool: on a 2-core machine PyTorch ops after a mask computation ran ~100x
slower (0.04 ms -> 8 ms for a 32k-element sqrt). ``OMP_WAIT_POLICY=PASSIVE``
costs nothing measurable for our coarse parallel loops, but libgomp reads it
only when it loads, so it is set here, before numba or torch can load it (an
explicit user setting wins). If torch came first, libgomp is loaded with
torch's policy and it is too late: then Numba's own pool ("workqueue") is used
instead of OpenMP, unless the user chose a threading layer.

**Threaded callers.** The workqueue layer is not thread-safe: two Python
threads inside Numba's parallel kernels at once abort the process ("Numba
workqueue threading layer is terminating: Concurrent access has been
detected"). So while the layer is workqueue, every call into a parallel kernel
holds :data:`KERNEL_LOCK` (:func:`kernel_guard`); with OpenMP or TBB, which
are thread-safe, it does not. Serialising costs threaded callers little: each
kernel already uses every core, and the lock is released while a kernel is not
running (measured in ``tests/test_threads.py``'s docstring). The alternatives
were worse: OpenMP with torch's already-loaded, actively spinning libgomp
brings back the slowdown above, and TBB is an extra binary dependency.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

_libgomp_maybe_loaded = "torch" in sys.modules
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

if _libgomp_maybe_loaded and "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

#: Held around every call into a parallel (``prange``) kernel while the threading layer is workqueue.
KERNEL_LOCK = threading.RLock()
_NO_LOCK = contextlib.nullcontext()
_THREAD_SAFE_LAYERS = ("omp", "tbb", "threadsafe")
_needs_lock: bool | None = None  # unknown until Numba has chosen its layer (at the first parallel launch)


def kernel_guard():
    """Context manager for a call into parallel kernels: :data:`KERNEL_LOCK` if the layer is workqueue, else nothing.

    Before the first parallel launch the layer is not known yet, and the lock
    is taken; afterwards the answer is cached.
    """
    global _needs_lock
    if _needs_lock is None:
        if numba.config.THREADING_LAYER in _THREAD_SAFE_LAYERS:
            _needs_lock = False
        else:
            try:
                _needs_lock = numba.threading_layer() == "workqueue"
            except ValueError:  # no parallel region has run yet
                return KERNEL_LOCK
    return KERNEL_LOCK if _needs_lock else _NO_LOCK
