"""Where a results file goes and what made it (commit, CPU, date): one home for bench/ and paper_figs/.

Every results file (``bench/results/*.json`` and ``.md``, ``paper_figs/out/*.json``
and the gallery) records :func:`provenance`, so a number quoted in the README can
name the commit and the machine it came from; and only a full run writes the
published files (:func:`results_folder`), a ``--quick`` smoke run never does.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"  # the published bench results


def results_folder(out: str | Path | None, quick: bool, published: Path = RESULTS) -> Path:
    """The folder a run writes to, created: ``out`` if given; else ``published`` for a full run and
    a new temporary folder for a ``--quick`` smoke run, so smoke numbers never replace published ones."""
    if out is not None:
        path = Path(out)
    elif quick:
        path = Path(tempfile.mkdtemp(prefix="transmask-quick-"))
    else:
        path = Path(published)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cpu_model() -> str:
    """The ``model name`` of /proc/cpuinfo (else ``platform.processor()``), or ``"unknown"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), else the logical CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _git(*args: str, root: Path = ROOT) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit(root: Path = ROOT) -> str | None:
    """``git rev-parse --short HEAD``, with ``-dirty`` appended when tracked files differ from it.

    None outside a git checkout (e.g. an installed package) or without git.
    """
    commit = _git("rev-parse", "--short", "HEAD", root=root)
    if not commit:
        return None
    changed = _git("status", "--porcelain", "--untracked-files=no", root=root)
    return commit + ("-dirty" if changed else "")


def provenance() -> dict:
    """Commit, CPU, CPU counts, platform, Python, date (UTC) and load average of this run."""
    return {
        "git_commit": git_commit(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def provenance_line(info: dict) -> str:
    """One line for a report: ``<cpu> (N usable CPUs), commit abc1234, <date> UTC``."""
    return (f"{info.get('cpu', 'unknown')} ({info.get('usable_cpus', '?')} usable CPUs), "
            f"commit {info.get('git_commit') or 'unknown'}, {str(info.get('date', '?'))[:16].replace('T', ' ')} UTC")
