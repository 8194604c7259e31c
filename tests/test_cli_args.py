"""Every command-line argument error is one line on stderr with exit status 2, never a traceback (issue 12 #5)."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import transmask as tm
from transmask import cli

ROOT = Path(tm.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("args") / "x.npz"
    np.savez(path, w=np.ones((8, 8), np.float32))
    return path


def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


BAD = [
    (["mask", "{ckpt}", "-o", "{out}", "--patterns", "5:4"], "unrecognized arguments: --patterns 5:4"),
    (["mask", "{ckpt}", "-o", "{out}", "-n", "5", "-m", "4"], "n must not exceed m"),
    (["mask", "{ckpt}", "-o", "{out}", "-n", "two"], "invalid int value: 'two'"),
    (["mask", "{ckpt}", "-o", "{out}", "-m", "0"], "m must be a positive integer"),
    (["mask", "{ckpt}", "-o", "{out}", "-m", "4.5"], "invalid int value"),
    (["mask", "{ckpt}", "-o", "{out}", "--method", "magic"], "invalid choice: 'magic'"),
    (["mask", "{ckpt}", "-o", "{out}", "--keep", "some"], "invalid choice: 'some'"),
    (["mask", "{ckpt}", "-o", "{out}", "--format", "onnx"], "invalid choice: 'onnx'"),
    (["mask", "{ckpt}", "-o", "{out}", "--threads", "0"], "--threads must be at least 1"),
    (["mask", "{ckpt}", "-o", "{out}", "--min-numel", "lots"], "invalid int value: 'lots'"),
    (["mask", "{ckpt}", "-o", "{out}", "--include"], "expected one argument"),
    (["mask", "{ckpt}", "-o", ""], "an output path is empty"),
    (["mask", "{ckpt}", "-o", "{out}", "--pruned", ""], "an output path is empty"),
    (["mask", "{ckpt}", "-o", "{out}", "--pruned", "{out}"], "name the same file"),
    (["mask", "{ckpt}", "-o", "{ckpt}"], "would overwrite the checkpoint"),
    (["mask", "{ckpt}", "-o", "{dir}"], "is a directory"),
    (["mask", "{ckpt}"], "the following arguments are required: -o/--output"),
    (["mask"], "the following arguments are required: CHECKPOINT"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["--nope"], "unrecognized arguments: --nope"),
    (["diversity", "-n", "9", "-m", "8"], "n must not exceed m"),
    (["diversity", "--size", "10"], "expected 2 arguments"),
    (["diversity", "--size", "0", "0"], "--size must be positive"),
    (["diversity", "-n", "2", "-m", "4", "--size", "10", "10"], "multiple of 4"),
]


@pytest.mark.parametrize("argv, text", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_argument_errors_are_one_line(ckpt, tmp_path, argv, text):
    fill = {"ckpt": str(ckpt), "out": str(tmp_path / "o.safetensors"), "dir": str(tmp_path)}
    rc, stdout, err = run([a.format(**fill) for a in argv])
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("transmask") and text in lines[0], err
    assert "Traceback" not in err and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_odd_globs_are_matched_literally(ckpt, tmp_path):
    """fnmatch never raises: an unclosed bracket is a literal character, so the glob just matches nothing."""
    rc, _, err = run(["mask", ckpt, "--include", "[w", "-o", tmp_path / "o.safetensors"])
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "no tensor" in err
    rc, _, err = run(["mask", ckpt, "--include", "[vw]", "--min-numel", 1, "-o", tmp_path / "o.safetensors"])
    assert rc == 0, err


def test_help_lists_every_subcommand_and_the_guarantees():
    rc, out, _ = run(["--help"])
    assert rc == 0 and all(c in out for c in ("mask", "diversity", "bench", "demo"))
    rc, out, _ = run(["mask", "--help"])
    assert rc == 0 and "--include-embeddings" in out and "guarantees:" in out and "index.json" in out


def test_subcommands_register_through_one_list(monkeypatch):
    """A new subcommand is one add_<name>_parser in SUBCOMMANDS and its cmd_<name>."""
    calls = []

    def add_hello_parser(subparsers):
        p = subparsers.add_parser("hello")
        p.add_argument("--times", type=int, default=1)
        p.set_defaults(func=lambda args: calls.append(args.times) or 0)

    monkeypatch.setattr(cli, "SUBCOMMANDS", [*cli.SUBCOMMANDS, add_hello_parser])
    assert run(["hello", "--times", "3"])[0] == 0 and calls == [3]
    rc, _, err = run(["hello", "--times", "x"])
    assert rc == 2 and len(err.strip().splitlines()) == 1


def test_bench_outside_a_checkout_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(cli, "_bench_script", lambda: None)
    rc, _, err = run(["bench", "--quick"])
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "source repository" in err and "python bench/solvers.py" in err


def test_bench_is_found_from_an_installed_package_run_in_a_checkout(tmp_path, monkeypatch):
    """With the package installed elsewhere, `transmask bench` in a checkout runs that checkout's bench."""
    checkout = tmp_path / "checkout"
    (checkout / "bench").mkdir(parents=True)
    (checkout / "transmask").mkdir()
    (checkout / "transmask" / "__init__.py").write_text("")
    (checkout / "bench" / "solvers.py").write_text("")
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "transmask" / "cli.py"))
    monkeypatch.chdir(checkout)
    assert cli._bench_script() == checkout / "bench" / "solvers.py"
    monkeypatch.chdir(tmp_path)
    assert cli._bench_script() is None


def test_argument_error_through_a_real_process(ckpt, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "transmask", "mask", str(ckpt), "--patterns", "5:4", "-o",
                           str(tmp_path / "o.safetensors")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
