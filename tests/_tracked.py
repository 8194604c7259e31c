"""Fingerprint of the files under some folders of the checkout, to show that a smoke run leaves them alone.

The fingerprint is the SHA-256 of every tracked file plus ``git status --porcelain``
(which also lists new untracked files) of those folders: equal before and after a
run means the run wrote nothing there.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout


def fingerprint(*folders: str) -> dict:
    files = [f for f in _git("ls-files", "-z", "--", *folders).decode().split("\0") if f]
    assert files, f"no tracked files under {folders}"
    digests = {f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest() if (ROOT / f).exists() else None
               for f in files}
    return {"files": digests, "status": _git("status", "--porcelain", "--", *folders).decode()}


def printed_folder(stdout: str, prefix: str) -> Path:
    """The folder named on the line ``<prefix> <folder>`` of a script's output."""
    found = re.search(rf"^{re.escape(prefix)} (\S+)", stdout, re.M)
    assert found, f"no line '{prefix} ...' in the output:\n{stdout[-2000:]}"
    return Path(found.group(1))


def quick_bench_run(script: str, *args: str, timeout: int) -> tuple[subprocess.CompletedProcess, dict, str]:
    """Run ``bench/<script>.py --quick *args``; return (process, its JSON report, its markdown).

    Asserts what every smoke run owes: exit 0, the results written to the temporary folder it prints (outside
    the checkout, removed afterwards), and the published ``bench/results`` left untouched."""
    import json
    import shutil
    import sys

    before = fingerprint("bench/results")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), "--quick", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = printed_folder(proc.stdout, "results go to")
    try:
        assert fingerprint("bench/results") == before
        assert not out.resolve().is_relative_to(ROOT)
        report = json.loads((out / f"{script}.json").read_text())
        md = (out / f"{script}.md").read_text()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return proc, report, md
