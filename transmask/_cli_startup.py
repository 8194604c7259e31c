"""Ctrl-C and SIGTERM while the ``transmask`` command is still starting.

Importing transmask (numpy, numba) takes a second or more before
:func:`transmask.cli.main` runs and can turn an interrupt into one line and an
exit status; Python's default would print a ``KeyboardInterrupt`` traceback
from deep inside an import. :func:`guard` is called first thing by
``transmask/__init__.py``: when this process is the ``transmask`` command (the
console script, or ``python -m transmask``) it makes SIGINT and SIGTERM print
one line and exit at once (status 130 or 143): nothing has been written yet.
``main`` replaces these handlers with its own, which clean up outputs, as soon
as it starts. In any other process (``import transmask`` in a program, tests)
nothing changes.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

_EXIT = {signal.SIGINT: (130, b"transmask: interrupted\n"), signal.SIGTERM: (143, b"transmask: terminated (SIGTERM)\n")}


def _is_transmask_command() -> bool:
    if sys.argv and os.path.basename(sys.argv[0]) in ("transmask", "transmask.exe", "transmask-script.py"):
        return True
    argv = getattr(sys, "orig_argv", [])  # "python -m transmask ..."; while -m runs, sys.argv[0] is "-m"
    return any(a == "-m" and b == "transmask" for a, b in zip(argv, argv[1:])) or "-mtransmask" in argv


def _exit_now(signum, frame) -> None:
    code, line = _EXIT[signum]
    os.write(2, line)
    os._exit(code)


def guard() -> None:
    """In the ``transmask`` command only: SIGINT/SIGTERM exit at once with one line until ``main`` takes over."""
    if threading.current_thread() is not threading.main_thread() or not _is_transmask_command():
        return
    for sig in _EXIT:
        if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):  # SIG_IGN stays ignored
            signal.signal(sig, _exit_now)
