"""``transmask mask --permute``: MLP hidden units permuted before masking, function unchanged, end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

import transmask as tm
from transmask import cli

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _mlp_checkpoint(path, rng, hidden=128, width=32):
    t = {}
    for layer in range(2):
        p = f"h.{layer}.mlp."
        # heavy-tailed rows so a permutation has something to regroup
        t[p + "fc1.weight"] = (rng.standard_t(2, (hidden, width)) * rng.uniform(.1, 3, (hidden, 1))).astype(np.float32)
        t[p + "fc1.bias"] = rng.standard_normal(hidden).astype(np.float32)
        t[p + "fc2.weight"] = (rng.standard_t(2, (width, hidden)) * rng.uniform(.1, 3, (1, hidden))).astype(np.float32)
        t[p + "fc2.bias"] = rng.standard_normal(width).astype(np.float32)
    t["h.0.attn.proj.weight"] = rng.standard_normal((width, width)).astype(np.float32)
    safetensors_numpy.save_file(t, str(path))
    return t


def _mlp(x, t, p):  # in float64, so that only the order of the sums differs
    w1, b1, w2, b2 = (t[p + k].astype(np.float64) for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
    return np.maximum(x @ w1.T + b1, 0) @ w2.T + b2


def test_permute_end_to_end(tmp_path, capsys):
    t = _mlp_checkpoint(tmp_path / "m.safetensors", np.random.default_rng(0))
    out, pruned = tmp_path / "masks.safetensors", tmp_path / "pruned.safetensors"
    rc = cli.main(["mask", str(tmp_path / "m.safetensors"), "--permute", "--permute-sweeps", "2", "--min-numel", "1",
                   "-o", str(out), "--pruned", str(pruned), "-q"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "masks.permutations.json").read_text())
    assert set(report["groups"]) == {"h.0.", "h.1."}
    masks, pr = safetensors_numpy.load_file(str(out)), safetensors_numpy.load_file(str(pruned))
    x = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
    for prefix, g in report["groups"].items():
        perm = np.asarray(g["perm"])
        assert sorted(perm.tolist()) == list(range(128))
        p = prefix + "mlp."
        permuted = dict(t)
        permuted[p + "fc1.weight"], permuted[p + "fc1.bias"] = t[p + "fc1.weight"][perm], t[p + "fc1.bias"][perm]
        permuted[p + "fc2.weight"] = t[p + "fc2.weight"][:, perm]
        # the permutation alone leaves the MLP's function unchanged
        np.testing.assert_allclose(_mlp(x, permuted, p), _mlp(x, t, p), rtol=1e-12, atol=1e-9)
        # the pruned checkpoint holds the permuted weights under their transposable masks (biases permuted too)
        for name in (p + "fc1.weight", p + "fc2.weight"):
            assert tm.is_transposable(masks[name], 2, 4)
            np.testing.assert_array_equal(pr[name], permuted[name] * masks[name])
        np.testing.assert_array_equal(pr[p + "fc1.bias"], permuted[p + "fc1.bias"])
        np.testing.assert_array_equal(pr[p + "fc2.bias"], t[p + "fc2.bias"])
        # the reported kept magnitude is what the written masks keep, and never less than without permuting
        kept = sum(tm.kept_l1(permuted[n], masks[n]) for n in (p + "fc1.weight", p + "fc2.weight"))
        assert kept == pytest.approx(g["kept"], rel=1e-6)
        assert g["kept"] >= g["kept_identity"]
    assert sum(g["kept"] - g["kept_identity"] for g in report["groups"].values()) > 0
    # tensors outside any MLP pass through unpermuted
    np.testing.assert_array_equal(pr["h.0.attn.proj.weight"], t["h.0.attn.proj.weight"] * masks["h.0.attn.proj.weight"])


def test_permute_is_deterministic(tmp_path):
    _mlp_checkpoint(tmp_path / "m.safetensors", np.random.default_rng(2))
    docs = []
    for i in range(2):
        assert cli.main(["mask", str(tmp_path / "m.safetensors"), "--permute", "--permute-sweeps", "1", "-q",
                         "--min-numel", "1", "-o", str(tmp_path / f"o{i}.safetensors")]) == 0
        docs.append(json.loads((tmp_path / f"o{i}.permutations.json").read_text())["groups"])
    assert [g["perm"] for g in docs[0].values()] == [g["perm"] for g in docs[1].values()]


@pytest.mark.parametrize("extra, needle", [
    (["--no-transposable"], "cannot be combined with --no-transposable"),
    (["--permute-sweeps", "0"], "--permute-sweeps must be at least 1"),
])
def test_permute_argument_errors(tmp_path, capsys, extra, needle):
    _mlp_checkpoint(tmp_path / "m.safetensors", np.random.default_rng(3))
    rc = cli.main(["mask", str(tmp_path / "m.safetensors"), "--permute", *extra, "-o", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and err.count("\n") == 1
    assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".o*"))


def test_permute_without_mlps_says_so(tmp_path, capsys):
    safetensors_numpy.save_file({"a.weight": np.ones((16, 16), np.float32)}, str(tmp_path / "m.safetensors"))
    assert cli.main(["mask", str(tmp_path / "m.safetensors"), "--permute", "--min-numel", "1", "-q",
                     "-o", str(tmp_path / "o.safetensors")]) == 0
    assert "found no MLP" in capsys.readouterr().err
    assert json.loads((tmp_path / "o.permutations.json").read_text())["groups"] == {}
