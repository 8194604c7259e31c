"""The README's PyTorch example (sparse training and AdaPrune on scikit-learn's digits) runs as written.

``SNIPPET`` is the README's code block, character for character: README.md must hold
a block that starts with the snippet's first line and equals ``SNIPPET`` (so the
README cannot drift from what is tested here), and the snippet itself runs.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

README = Path(__file__).resolve().parents[1] / "README.md"

SNIPPET = '''\
# Sparse training and AdaPrune on scikit-learn's digits (no download; about half a minute on a CPU)
import torch
import transmask.training as tt
from transmask.training.data import DigitsMLP, evaluate, load_digits_tensors, train

data = load_digits_tensors(seed=0)  # 1257 training / 540 test images of 8x8 pixels, 256 calibration images

# 1. Train with transposable 4:8 masks (4 kept of every 8; W and W.T both 4:8)
model = DigitsMLP(seed=0)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
ctl = tt.sparsify(model, 4, 8, update_every=40, update_until=240, optimizer=opt)  # exact masks every 40 steps
train(model, data.x_train, data.y_train, epochs=15, optimizer=opt)  # or your own loop: opt.step() updates masks
print(ctl.summary(as_text=True))             # per layer: view shape, density, kept |W| fraction, valid
ctl.freeze()                                 # fix the masks, zero the pruned weights
print(f"4:8-T sparse training: test accuracy {evaluate(model, data.x_test, data.y_test):.3f}")

# 2. Convert a trained dense model to transposable 2:4 without retraining
dense = DigitsMLP(seed=0)
train(dense, data.x_train, data.y_train, epochs=15)
res = tt.adaprune(dense, data.x_calib, 2, 4, fit="lstsq", progress=False)
print(res.summary())                         # per layer: errors before/after, held-out check, choice
magnitude = tt.magnitude_prune(dense, 2, 4)  # the baseline: the same masks, weights not re-fitted
for name, net in (("dense", dense), ("2:4-T magnitude", magnitude), ("2:4-T AdaPrune", res.model)):
    print(f"{name}: test accuracy {evaluate(net, data.x_test, data.y_test):.3f}")
torch.save(tt.export(res.model).state_dict(), "digits_2to4T.pt")  # plain nn.Linear weights, zeros where pruned
'''


def readme_block(first_line: str) -> str | None:
    """The ```python block of README.md that starts with ``first_line``, or None when there is none."""
    for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S):
        if block.startswith(first_line):
            return block
    return None


def test_readme_holds_the_tested_snippet():
    block = readme_block(SNIPPET.splitlines()[0])
    assert block is not None, "README.md should show the training example"
    assert block == SNIPPET  # the README's text is the tested text


def test_snippet_runs(tmp_path, monkeypatch, capsys):
    from transmask.training.data import DigitsMLP

    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)  # tiny models; extra threads only contend on a shared 2-core machine
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the example runs clean
        exec(compile(SNIPPET, "README.md (training example)", "exec"), namespace)
    out = capsys.readouterr().out
    print(out)
    acc = {k: float(v) for k, v in re.findall(r"^(.+): test accuracy (\d\.\d+)$", out, re.M)}
    assert set(acc) == {"4:8-T sparse training", "dense", "2:4-T magnitude", "2:4-T AdaPrune"}
    assert acc["dense"] >= 0.95 and acc["4:8-T sparse training"] >= acc["dense"] - 0.03
    assert acc["2:4-T AdaPrune"] > acc["2:4-T magnitude"]
    assert namespace["ctl"].all_valid() and "kept_l1_fraction" in out and "heldout_error_fitted" in out
    fresh = DigitsMLP(seed=1)
    fresh.load_state_dict(torch.load(tmp_path / "digits_2to4T.pt", weights_only=True))  # the dense architecture
    assert torch.equal(fresh(namespace["data"].x_test), namespace["res"].model(namespace["data"].x_test))
