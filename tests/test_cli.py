"""End-to-end tests of the ``transmask`` command line on generated checkpoints.

Most runs call ``transmask.cli.main([...])`` in-process (fast: the Numba kernels
compile once); a few go through ``python -m transmask`` in a subprocess.
.npy/.npz/.safetensors need neither torch nor (except to check outputs) the
safetensors package; only the torch-file tests need torch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

import transmask as tm
from transmask import cli
from transmask.views import view_to_weight, weight_to_2d

ROOT = Path(tm.__file__).resolve().parent.parent
N, M = 2, 4


def _arrays() -> dict:
    """The test state dict as numpy arrays (torch files store decoder.proj.weight as bfloat16)."""
    g = np.random.default_rng(0)
    return {
        "encoder.linear.weight": g.standard_normal((32, 48), dtype=np.float32),
        "encoder.linear.bias": g.standard_normal(32, dtype=np.float32),
        "encoder.conv.weight": g.standard_normal((16, 8, 3, 3), dtype=np.float32),  # Conv2d (out, in, kh, kw)
        "encoder.conv1d.weight": g.standard_normal((12, 8, 5), dtype=np.float32),   # Conv1d (out, in, k)
        "decoder.proj.weight": g.standard_normal((30, 42), dtype=np.float32),       # edge tiles (bf16 in torch files)
        "decoder.half.weight": g.standard_normal((20, 36), dtype=np.float32).astype(np.float16),
        "decoder.tiny.weight": g.standard_normal((4, 4), dtype=np.float32),          # below --min-numel
        "decoder.steps": np.array([3, 4], dtype=np.int64),
    }


def _state_dict(torch) -> dict:
    sd = {k: torch.from_numpy(v.copy()) for k, v in _arrays().items()}
    sd["decoder.proj.weight"] = sd["decoder.proj.weight"].to(torch.bfloat16)
    return sd


SELECTED = {"encoder.linear.weight", "encoder.conv.weight", "encoder.conv1d.weight",
            "decoder.proj.weight", "decoder.half.weight"}
MIN_NUMEL = ["--min-numel", "64"]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def safetensors_torch(torch):
    return pytest.importorskip("safetensors.torch")


@pytest.fixture(scope="module")
def sd(torch):
    return _state_dict(torch)


@pytest.fixture(scope="module")
def arrays():
    return _arrays()


@pytest.fixture(scope="module")
def np_checkpoints(tmp_path_factory, arrays):
    """Checkpoints written without torch: .npz, compressed .npz, .npy, .safetensors (with the safetensors package)."""
    d = tmp_path_factory.mktemp("np_ckpt")
    np.savez(d / "model.npz", **arrays)
    np.savez_compressed(d / "compressed.npz", **arrays)
    np.save(d / "layer.weight.npy", arrays["encoder.linear.weight"])
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    safetensors_numpy.save_file(arrays, str(d / "model.safetensors"))
    return d


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, sd, torch, safetensors_torch):
    d = tmp_path_factory.mktemp("ckpt")
    safetensors_torch.save_file(sd, str(d / "model.safetensors"))
    torch.save(sd, d / "model.pt")
    torch.save({"model": sd, "epoch": 7}, d / "nested.pt")  # a training checkpoint: nested, with non-tensors
    as_np = {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in sd.items()}
    np.savez(d / "model.npz", **as_np)
    np.savez_compressed(d / "compressed.npz", **as_np)
    np.save(d / "layer.weight.npy", as_np["encoder.linear.weight"])
    return d


def run(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def to_2d(w: np.ndarray) -> np.ndarray:
    """The documented conv view, written out as a user would (w.permute(0, 2, 3, 1).reshape(out, -1) in torch)."""
    if w.ndim == 4:
        return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)
    if w.ndim == 3:
        return np.ascontiguousarray(w.transpose(0, 2, 1)).reshape(w.shape[0], -1)
    return w


def weights_np(sd) -> dict:
    """Float numpy arrays of a torch state dict or of numpy arrays."""
    return {k: v.float().numpy() if hasattr(v, "float") else np.asarray(v, np.float32) for k, v in sd.items()}


def check_masks(masks: dict, weights: dict, names, n=N, m=M, method="exact", keep="exactly", transposable=True):
    assert set(masks) == set(names)
    for name in names:
        mask = np.asarray(masks[name])
        w = weights[name]
        assert mask.dtype == np.bool_ and mask.shape == w.shape, name
        w2, m2 = to_2d(w), to_2d(mask)
        if transposable:
            expected = tm.optimal_mask(w2, n, m, method=method, keep=keep)
            assert tm.is_transposable(m2, n, m, keep=keep), name
        else:
            expected = tm.nm_mask(w2, n, m)
        np.testing.assert_array_equal(m2, expected, err_msg=name)


def load_safetensors(path) -> dict:
    """A safetensors file read with the reference library (numpy: no torch needed; bool masks load fine)."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    return safetensors_numpy.load_file(str(path))


def files_in(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


# ------------------------------------------------------------------------------ every input format
@pytest.mark.parametrize("name, prefix", [
    ("model.safetensors", ""), ("model.pt", ""), ("nested.pt", "model."),
    ("model.npz", ""), ("compressed.npz", ""),
])
def test_mask_every_input_format(checkpoints, sd, torch, safetensors_torch, tmp_path, capsys, name, prefix):
    out, pruned = tmp_path / "masks.safetensors", tmp_path / "pruned.safetensors"
    rc, stdout, stderr = run(["mask", checkpoints / name, "-n", N, "-m", M, *MIN_NUMEL,
                              "-o", out, "--pruned", pruned], capsys)
    assert rc == 0, stderr
    weights = {prefix + k: v for k, v in weights_np(sd).items()}
    masks = load_safetensors(out)
    check_masks(masks, weights, {prefix + s for s in SELECTED})
    # the table: one row per masked tensor and a total row
    for s in SELECTED:
        assert prefix + s in stdout
    assert "total" in stdout and "kept L1" in stdout and "density" in stdout
    assert prefix + "decoder.tiny.weight" not in stdout.split("skipped")[0]
    # the pruned checkpoint: every tensor, masked ones zeroed, original dtypes where the input kept them
    pr = safetensors_torch.load_file(str(pruned))
    assert set(pr) == set(weights)
    for k, v in pr.items():
        orig = weights[k]
        if k in masks:
            np.testing.assert_array_equal(v.float().numpy(), np.where(masks[k], orig, 0), err_msg=k)
        else:
            np.testing.assert_array_equal(v.float().numpy(), orig, err_msg=k)
    if name.endswith((".safetensors", ".pt")):
        assert pr[prefix + "decoder.proj.weight"].dtype == torch.bfloat16
        assert pr[prefix + "decoder.half.weight"].dtype == torch.float16
        assert pr[prefix + "decoder.steps"].dtype == torch.int64
    assert sorted(files_in(tmp_path)) == ["masks.safetensors", "pruned.safetensors"]  # no temp files left


@pytest.mark.parametrize("name", ["model.safetensors", "model.npz", "compressed.npz"])
def test_mask_every_input_format_without_torch(np_checkpoints, arrays, tmp_path, capsys, name):
    out, pruned = tmp_path / "masks.safetensors", tmp_path / "pruned.safetensors"
    rc, stdout, stderr = run(["mask", np_checkpoints / name, "-n", N, "-m", M, *MIN_NUMEL,
                              "-o", out, "--pruned", pruned], capsys)
    assert rc == 0, stderr
    masks = load_safetensors(out)
    check_masks(masks, weights_np(arrays), SELECTED)
    for s in SELECTED:
        assert s in stdout
    pr = load_safetensors(pruned)
    assert set(pr) == set(arrays)
    for k, v in pr.items():
        assert v.dtype == arrays[k].dtype, k  # original dtypes (float16, int64) kept
        np.testing.assert_array_equal(v, np.where(masks[k], arrays[k], 0) if k in masks else arrays[k], err_msg=k)
    assert sorted(files_in(tmp_path)) == ["masks.safetensors", "pruned.safetensors"]


def test_npy_input_and_output(np_checkpoints, arrays, tmp_path, capsys):
    out = tmp_path / "mask.npy"
    rc, stdout, stderr = run(["mask", np_checkpoints / "layer.weight.npy", "-o", out, *MIN_NUMEL], capsys)
    assert rc == 0, stderr
    check_masks({"layer.weight": np.load(out)}, {"layer.weight": arrays["encoder.linear.weight"]},
                {"layer.weight"})
    assert "layer.weight" in stdout


@pytest.mark.parametrize("suffix", [".npz", ".pt", ".bin"])
def test_output_formats(checkpoints, sd, torch, tmp_path, capsys, suffix):
    out, pruned = tmp_path / f"masks{suffix}", tmp_path / f"pruned{suffix}"
    rc, _, stderr = run(["mask", checkpoints / "model.safetensors", *MIN_NUMEL, "-o", out, "--pruned", pruned], capsys)
    assert rc == 0, stderr
    if suffix == ".npz":
        with np.load(out) as z:
            masks = {k: z[k] for k in z.files}
        with np.load(pruned) as z:
            assert z["decoder.proj.weight"].dtype == np.float32  # npz has no bfloat16: widened
            assert z["decoder.steps"].dtype == np.int64
    else:
        masks = {k: v.numpy() for k, v in torch.load(out, weights_only=True).items()}
        p = torch.load(pruned, weights_only=True)
        assert p["decoder.proj.weight"].dtype == torch.bfloat16
    check_masks(masks, weights_np(sd), SELECTED)


def test_format_flag_overrides_suffix(np_checkpoints, tmp_path, capsys):
    out = tmp_path / "masks.data"
    rc, _, stderr = run(["mask", np_checkpoints / "model.npz", *MIN_NUMEL, "-o", out, "--format", "npz"], capsys)
    assert rc == 0, stderr
    assert zipfile.is_zipfile(out)
    rc, _, stderr = run(["mask", np_checkpoints / "model.npz", *MIN_NUMEL, "-o", tmp_path / "masks.weird"], capsys)
    assert rc == 0, stderr
    assert len(load_safetensors(tmp_path / "masks.weird")) == len(SELECTED)  # unknown suffix -> safetensors


def test_safetensors_metadata(checkpoints, tmp_path, capsys):
    from safetensors import safe_open

    out = tmp_path / "m.safetensors"
    assert run(["mask", checkpoints / "model.pt", "-n", 4, "-m", 8, *MIN_NUMEL, "-o", out], capsys)[0] == 0
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["n"] == "4" and meta["m"] == "8" and meta["method"] == "exact" and meta["keep"] == "exactly"


# ------------------------------------------------------------------------------ methods and selection
@pytest.mark.parametrize("extra, kw", [
    (["--method", "approx"], {"method": "approx"}),
    (["--keep", "at_most"], {"keep": "at_most"}),
    (["-n", 4, "-m", 8], {"n": 4, "m": 8}),
    (["--no-transposable"], {"transposable": False}),
    (["--no-check", "--threads", 1], {}),
])
def test_methods_and_modes(np_checkpoints, arrays, tmp_path, capsys, extra, kw):
    out = tmp_path / "masks.safetensors"
    rc, stdout, stderr = run(["mask", np_checkpoints / "model.safetensors", *MIN_NUMEL, *extra, "-o", out], capsys)
    assert rc == 0, stderr
    check_masks(load_safetensors(out), weights_np(arrays), SELECTED, **kw)
    if not kw.get("transposable", True):
        assert "row-wise" in stdout


def test_include_exclude_and_min_numel(np_checkpoints, tmp_path, capsys):
    out = tmp_path / "masks.safetensors"
    rc, stdout, _ = run(["mask", np_checkpoints / "model.safetensors", *MIN_NUMEL, "--include", "encoder.*",
                         "--exclude", "*conv1d*", "-v", "-o", out], capsys)
    assert rc == 0
    assert set(load_safetensors(out)) == {"encoder.linear.weight", "encoder.conv.weight"}
    assert "matched by --exclude" in stdout and "not matched by --include" in stdout
    rc, _, _ = run(["mask", np_checkpoints / "model.safetensors", "--no-conv", "--min-numel", 1000, "-o", out], capsys)
    assert rc == 0
    assert set(load_safetensors(out)) == {"encoder.linear.weight", "decoder.proj.weight"}


def test_json_output(np_checkpoints, tmp_path, capsys):
    rc, stdout, _ = run(["mask", np_checkpoints / "model.npz", *MIN_NUMEL, "--json", "-o", tmp_path / "m.safetensors"],
                        capsys)
    assert rc == 0
    report = json.loads(stdout)
    assert {t["name"] for t in report["tensors"]} == SELECTED
    assert all(t["valid"] for t in report["tensors"])
    # full tiles keep exactly n of m; the 30 x 42 tensor has edge tiles (at most n among real entries)
    assert all(t["density"] == 0.5 for t in report["tensors"] if t["name"] != "decoder.proj.weight")
    conv = next(t for t in report["tensors"] if t["name"] == "encoder.conv.weight")
    assert conv["shape"] == [16, 8, 3, 3] and conv["view_shape"] == [16, 72]
    assert 0.45 < report["total"]["density"] < 0.55 and 0.5 < report["total"]["kept_fraction_l1"] < 1
    assert {s["name"] for s in report["skipped"]} == {"encoder.linear.bias", "decoder.tiny.weight", "decoder.steps"}


def test_conv_view_round_trip(torch):
    w = np.random.default_rng(1).standard_normal((6, 5, 3, 2))
    view = weight_to_2d(w)
    np.testing.assert_array_equal(view, torch.from_numpy(w).permute(0, 2, 3, 1).reshape(6, -1).numpy())
    np.testing.assert_array_equal(view_to_weight(view, w.shape), w)


def write_safetensors(path: Path, tensors: dict, order=None) -> None:
    """A safetensors file written byte by byte, tensors in the given order (the library sorts them by alignment)."""
    header, blobs, offset = {}, [], 0
    tags = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.bool_): "BOOL"}
    for name in order or tensors:
        a = np.ascontiguousarray(tensors[name])
        header[name] = {"dtype": tags[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def test_unaligned_safetensors_and_big_endian_npy(tmp_path, capsys):
    # An odd-length f16 tensor first puts the next f32 tensor at an offset that is not a multiple of 4.
    g = np.random.default_rng(3)
    sd = {"a": g.standard_normal(3).astype(np.float16), "b": g.standard_normal((16, 20)).astype(np.float32)}
    write_safetensors(tmp_path / "u.safetensors", sd, order=["a", "b"])
    assert {k: v.tolist() for k, v in load_safetensors(tmp_path / "u.safetensors").items()} == \
        {k: v.tolist() for k, v in sd.items()}  # the library reads it too
    out = tmp_path / "o.safetensors"
    assert run(["mask", tmp_path / "u.safetensors", "--min-numel", 1, "-o", out], capsys)[0] == 0
    check_masks(load_safetensors(out), {"b": sd["b"]}, {"b"})
    w = np.random.default_rng(2).standard_normal((16, 24)).astype(">f4")
    np.save(tmp_path / "be.npy", w)
    assert run(["mask", tmp_path / "be.npy", "--min-numel", 1, "-o", out], capsys)[0] == 0
    check_masks(load_safetensors(out), {"be": w.astype("<f4")}, {"be"})


def test_legacy_torch_format_is_read(tmp_path, sd, torch, capsys):
    path = tmp_path / "legacy.pt"
    torch.save({"w": sd["encoder.linear.weight"]}, path, _use_new_zipfile_serialization=False)
    rc, _, stderr = run(["mask", path, *MIN_NUMEL, "-o", tmp_path / "o.safetensors"], capsys)
    assert rc == 0
    assert "not memory-mappable" in stderr
    check_masks(load_safetensors(tmp_path / "o.safetensors"), {"w": sd["encoder.linear.weight"].numpy()}, {"w"})


# ------------------------------------------------------------------------------ errors
def _error_case(argv, capsys, out_dir: Path, code=None):
    before = files_in(out_dir)
    rc, stdout, stderr = run(argv, capsys)
    assert rc != 0
    if code is not None:
        assert rc == code
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("transmask")
    assert files_in(out_dir) == before, "partial output left behind"
    return lines[0]


def test_error_missing_file(tmp_path, capsys):
    line = _error_case(["mask", tmp_path / "nope.safetensors", "-o", tmp_path / "o.safetensors"], capsys, tmp_path, 1)
    assert "no such file" in line


def test_error_unknown_format(tmp_path, capsys):
    (tmp_path / "model.onnx").write_bytes(b"\0" * 16)
    line = _error_case(["mask", tmp_path / "model.onnx", "-o", tmp_path / "o.safetensors"], capsys, tmp_path, 1)
    assert "unknown checkpoint format" in line


@pytest.mark.parametrize("suffix, content", [(".safetensors", b"not a safetensors file"), (".pt", b""),
                                             (".npz", b"PK junk"), (".npy", b"\x93NUMPY junk")])
def test_error_corrupt_file(tmp_path, capsys, suffix, content):
    if suffix == ".pt":
        pytest.importorskip("torch")
    (tmp_path / f"bad{suffix}").write_bytes(content)
    line = _error_case(["mask", tmp_path / f"bad{suffix}", "-o", tmp_path / "o.safetensors"], capsys, tmp_path, 1)
    assert "cannot read" in line


@pytest.mark.parametrize("nm, text", [(("-n", 5, "-m", 4), "n must not exceed m"), (("-n", 0), "n must be"),
                                      (("-m", -4), "m must be"), (("-n", "two"), "invalid int")])
def test_error_invalid_nm(np_checkpoints, tmp_path, capsys, nm, text):
    line = _error_case(["mask", np_checkpoints / "model.npz", *nm, "-o", tmp_path / "o.safetensors"], capsys, tmp_path, 2)
    assert text in line


def test_error_nan_leaves_no_output_and_keeps_old_file(tmp_path, capsys):
    w = np.random.default_rng(0).standard_normal((3, 32, 32)).astype(np.float32)
    w[2, 5, 7] = np.nan
    np.savez(tmp_path / "nan.npz", a=w[0], b=w[1], c=w[2])  # the NaN is in the last tensor
    out, pruned = tmp_path / "o.safetensors", tmp_path / "p.safetensors"
    out.write_bytes(b"previous masks")  # an existing output survives a failed run untouched
    line = _error_case(["mask", tmp_path / "nan.npz", "--min-numel", 1, "-o", out, "--pruned", pruned],
                       capsys, tmp_path, 1)
    assert "'c'" in line and "NaN" in line
    assert out.read_bytes() == b"previous masks"
    assert not pruned.exists()


def test_error_nothing_selected(checkpoints, tmp_path, capsys):
    line = _error_case(["mask", checkpoints / "model.pt", "--include", "nothing.*", "-o", tmp_path / "o.safetensors"],
                       capsys, tmp_path, 1)
    assert "no tensor" in line


def test_error_output_would_overwrite_input(tmp_path, capsys, arrays):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"w": arrays["encoder.linear.weight"]})
    _error_case(["mask", path, "-o", path], capsys, tmp_path, 2)
    _error_case(["mask", path, "-o", tmp_path / "sub" / "o.safetensors"], capsys, tmp_path, 1)  # missing directory
    _error_case(["mask", path, "-o", path.with_name("model.SAFETENSORS") if os.name == "nt" else path], capsys, tmp_path, 2)


def test_error_bad_outputs_and_threads(np_checkpoints, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    before = files_in(tmp_path)
    _error_case(["mask", np_checkpoints / "model.npz", *MIN_NUMEL, "-o", tmp_path / "adir"], capsys, tmp_path, 2)
    _error_case(["mask", np_checkpoints / "model.npz", *MIN_NUMEL, "-o", tmp_path / "o.npz", "--pruned",
                 tmp_path / "o.npz"], capsys, tmp_path, 2)
    _error_case(["mask", np_checkpoints / "model.npz", *MIN_NUMEL, "-o", tmp_path / "o.npz", "--threads", 0],
                capsys, tmp_path, 2)
    assert files_in(tmp_path / "adir") == set() and files_in(tmp_path) == before


def test_error_npy_output_needs_one_tensor(np_checkpoints, tmp_path, capsys):
    line = _error_case(["mask", np_checkpoints / "model.safetensors", *MIN_NUMEL, "-o", tmp_path / "o.npy"],
                       capsys, tmp_path, 1)
    assert "one array" in line


def test_keyboard_interrupt_cleans_up(np_checkpoints, tmp_path, capsys, monkeypatch):
    real = tm.masks.optimal_mask
    calls = []

    def flaky(W, n, m, **kw):
        if np.asarray(W).size > m * m:  # not the warm-up call
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return real(W, n, m, **kw)

    monkeypatch.setattr(tm.masks, "optimal_mask", flaky)
    out, pruned = tmp_path / "o.safetensors", tmp_path / "p.npz"
    rc, _, stderr = run(["mask", np_checkpoints / "model.safetensors", *MIN_NUMEL, "-o", out, "--pruned", pruned],
                        capsys)
    assert rc == 130 and "interrupted" in stderr
    assert files_in(tmp_path) == set()


# ------------------------------------------------------------------------------ other subcommands
def test_diversity(capsys):
    import math

    rc, out, _ = run(["diversity", "-n", 4, "-m", 8, "--size", 64, 64, "--json"], capsys)
    assert rc == 0
    rows = {r["structure"]: r["log10_md"] for r in json.loads(out)["rows"]}
    assert rows["transposable"] == pytest.approx(64 * math.log10(116963796250))  # 64 tiles of K(8, 4)
    assert rows["nm"] == pytest.approx(512 * math.log10(math.comb(8, 4)))
    assert rows["unstructured"] == pytest.approx(math.log10(math.comb(4096, 2048)))
    rc, out, _ = run(["diversity", "-n", 4, "-m", 8], capsys)  # default size 4096 x 4096
    assert rc == 0 and "4096 x 4096" in out and "4:8 transposable" in out and "2,901,423" in out


def test_diversity_errors(capsys):
    rc, _, err = run(["diversity", "-n", 2, "-m", 4, "--size", 10, 10], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "multiple of 4" in err
    rc, _, err = run(["diversity", "-n", 9, "-m", 8], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1


def test_demo_passes_arguments(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("transmask.demo")
    fake.main = lambda argv=None: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "transmask.demo", fake)
    assert cli.main(["demo", "--size", "64"]) == 0
    assert seen == [["--size", "64"]]


def test_demo_exit_message(monkeypatch, capsys):
    fake = types.ModuleType("transmask.demo")

    def main(argv=None):
        raise SystemExit("transmask demo: bad pattern")

    fake.main = main
    monkeypatch.setitem(sys.modules, "transmask.demo", fake)
    rc, _, err = run(["demo", "--patterns", "x"], capsys)
    assert rc == 1 and err.strip() == "transmask demo: bad pattern"


def test_demo_runs(capsys):
    rc, out, _ = run(["demo", "--size", 32, 32, "--patterns", "2:4", "--no-lp"], capsys)
    assert rc == 0 and "exact" in out and "approx" in out


def test_bench_runs_script_with_arguments(monkeypatch, tmp_path):
    script = tmp_path / "solvers.py"
    script.write_text("import sys; print('ARGS', sys.argv[1:]); sys.exit(3)\n")
    monkeypatch.setattr(cli, "_bench_script", lambda: script)
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd, env=None: calls.append(cmd) or 3)
    assert cli.main(["bench", "--quick"]) == 3
    assert calls == [[sys.executable, str(script), "--quick"]]


def test_bench_missing_script(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_bench_script", lambda: None)
    rc, _, stderr = run(["bench", "--quick"], capsys)
    assert rc == 1 and "bench/solvers.py" in stderr and len(stderr.strip().splitlines()) == 1


def test_bench_script_is_found_in_checkout():
    if (ROOT / "bench" / "solvers.py").is_file():
        assert cli._bench_script() == ROOT / "bench" / "solvers.py"


def test_help_and_no_command(capsys):
    rc, out, _ = run(["mask", "--help"], capsys)
    assert rc == 0 and "channels-last" in out and "permute(0, 2, 3, 1)" in out
    rc, _, err = run([], capsys)
    assert rc == 2 and "mask" in err


# ------------------------------------------------------------------------------ through a real process
def _python_m(args, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "transmask", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_python_m_transmask_end_to_end(checkpoints, sd, tmp_path):
    out = tmp_path / "masks.safetensors"
    proc = _python_m(["mask", checkpoints / "model.pt", *MIN_NUMEL, "-o", out], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "total" in proc.stdout and proc.stderr == ""  # no progress bar when stderr is not a TTY
    check_masks(load_safetensors(out), weights_np(sd), SELECTED)
    proc = _python_m(["mask", tmp_path / "missing.npz", "-o", tmp_path / "x.safetensors"], tmp_path)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()
