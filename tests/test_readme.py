"""Every ```python block of README.md runs as written (in a fresh namespace, in a temp folder) and prints.

The sparse-training example is run (and its accuracies checked) by tests/test_readme_training.py; the
other blocks run here, each needing only what the README says to install for it.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
TRAINING = "# Sparse training and AdaPrune on scikit-learn's digits"
NEEDS = {"transmask.kernels": ("torch", "triton"), "transmask.prune": ("torch", "transformers"), "torch": ("torch",)}


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 6
    assert any(b.startswith(TRAINING) for b in BLOCKS)


@pytest.mark.parametrize("index", [i for i, b in enumerate(BLOCKS) if not b.startswith(TRAINING)])
def test_block_runs_and_prints(index, tmp_path, monkeypatch, capsys):
    block = BLOCKS[index]
    for key, modules in NEEDS.items():
        if f"import {key}" in block or f"from {key} " in block:
            for module in modules:
                pytest.importorskip(module)  # the test extras install them all; a bare install skips
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert out.strip(), "a README example should show its result"
    assert "False" not in out.replace("exact_log10=False", "")  # the examples print True for their checks
