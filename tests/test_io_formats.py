"""transmask.io readers and writers against the reference libraries, and the atomic writer (issue 13, 18)."""
from __future__ import annotations

import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest

from transmask.io import (AtomicFile, CheckpointError, Entry, OutputGroup, open_output, output_format,
                          read_checkpoint, signals_deferred)
from transmask.io.atomic import _PENDING
from transmask.io.safetensors import read_header

safetensors_numpy = pytest.importorskip("safetensors.numpy")

RNG = np.random.default_rng(0)
ARRAYS = {
    "f16": RNG.standard_normal((3, 5)).astype(np.float16),
    "f32": RNG.standard_normal((4, 6)).astype(np.float32),
    "f64": RNG.standard_normal(7),
    "i8": np.arange(-4, 4, dtype=np.int8), "u16": np.arange(9, dtype=np.uint16).reshape(3, 3),
    "i64": np.arange(5, dtype=np.int64), "u64": np.arange(2, dtype=np.uint64),
    "bool": np.array([[True, False], [False, True]]), "c64": (np.arange(3) + 1j).astype(np.complex64),
    "empty": np.zeros((0, 4), np.float32), "scalar": np.array(2.5, np.float32),
}


def write_all(path: Path, arrays: dict, fmt=None, metadata=None) -> None:
    tags = {name: read_tag(a) for name, a in arrays.items()}
    with OutputGroup() as group:
        out = group.add(open_output(path, [Entry(k, tags[k], a.shape) for k, a in arrays.items()], metadata, fmt))
        for k, a in arrays.items():
            out.write(k, a)
        group.commit()


def read_tag(a: np.ndarray) -> str:
    from transmask.io import dtype_tag

    return dtype_tag(a.dtype)


# ------------------------------------------------------------------------------ safetensors
def test_reader_matches_the_library(tmp_path):
    path = tmp_path / "lib.safetensors"
    safetensors_numpy.save_file(ARRAYS, str(path), metadata={"who": "library"})
    _, metadata, entries = read_header(path)
    assert metadata == {"who": "library"}
    refs = {r.name: r for r in read_checkpoint(path).tensors}
    assert set(refs) == set(ARRAYS)
    for name, a in ARRAYS.items():
        got = refs[name].load()
        assert got.dtype == a.dtype and got.shape == a.shape, name
        np.testing.assert_array_equal(got, a, err_msg=name)


def test_writer_is_read_by_the_library(tmp_path):
    path = tmp_path / "ours.safetensors"
    write_all(path, ARRAYS, metadata={"n": "2", "m": "4"})
    back = safetensors_numpy.load_file(str(path))
    for name, a in ARRAYS.items():
        assert back[name].dtype == a.dtype, name
        np.testing.assert_array_equal(back[name], a, err_msg=name)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"n": "2", "m": "4"}
    assert (struct.unpack("<Q", path.read_bytes()[:8])[0]) % 8 == 0  # header padded like the reference writer


def test_bfloat16_and_float8_travel_as_bits(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    bf = torch.randn(4, 8).to(torch.bfloat16)
    f8 = torch.randn(16).to(torch.float8_e4m3fn)
    save_file({"bf": bf, "f8": f8}, str(tmp_path / "in.safetensors"))
    refs = {r.name: r for r in read_checkpoint(tmp_path / "in.safetensors").tensors}
    assert refs["bf"].dtype == "BF16" and refs["f8"].dtype == "F8_E4M3"
    with OutputGroup() as group:
        outs = [group.add(open_output(tmp_path / f"out{s}", refs.values())) for s in (".safetensors", ".pt")]
        for r in refs.values():
            for out in outs:
                out.write(r.name, r.load())
        group.commit()
    for back in (load_file(str(tmp_path / "out.safetensors")), torch.load(tmp_path / "out.pt", weights_only=True)):
        assert torch.equal(back["bf"], bf) and torch.equal(back["f8"].view(torch.uint8), f8.view(torch.uint8))


# ------------------------------------------------------------------------------ npz, npy
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_round_trip(tmp_path, compressed):
    arrays = {k: v for k, v in ARRAYS.items()}
    arrays["fortran"] = np.asfortranarray(RNG.standard_normal((3, 4)))
    arrays["big_endian"] = np.arange(6, dtype=">f4")
    (np.savez_compressed if compressed else np.savez)(tmp_path / "in.npz", **arrays)
    refs = {r.name: r for r in read_checkpoint(tmp_path / "in.npz").tensors}
    for name, a in arrays.items():
        np.testing.assert_array_equal(refs[name].load(), a, err_msg=name)
    write_all(tmp_path / "out.npz", {k: refs[k].load() for k in arrays})
    with np.load(tmp_path / "out.npz") as z:
        for name, a in arrays.items():
            assert z[name].dtype == a.dtype
            np.testing.assert_array_equal(z[name], a, err_msg=name)


def test_npy_output_holds_exactly_one_tensor(tmp_path):
    write_all(tmp_path / "one.npy", {"w": ARRAYS["f32"]})
    np.testing.assert_array_equal(np.load(tmp_path / "one.npy"), ARRAYS["f32"])
    with pytest.raises(CheckpointError, match="holds one array but 2 tensors"):
        open_output(tmp_path / "two.npy", [Entry("a", "F32", (1,)), Entry("b", "F32", (1,))])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npy"]


def test_output_format_by_suffix():
    assert [output_format(p) for p in ("a.safetensors", "a.npz", "a.NPY", "a.pt", "a.bin", "a.pth", "a.x")] == \
        ["safetensors", "npz", "npy", "pt", "pt", "pt", "safetensors"]
    assert output_format("a.npz", "pt") == "pt"
    with pytest.raises(CheckpointError, match="unknown output format"):
        output_format("a.npz", "onnx")


@pytest.mark.parametrize("fmt, entry, message", [
    ("npz", Entry("a\0b", "F32", (2,)), "NUL"),
    ("npz", Entry("q", "F8_E4M3", (2,)), "F8_E4M3"),
    ("safetensors", Entry("c", "<c16", (2,)), "<c16"),
    ("safetensors", Entry("__metadata__", "F32", (2,)), "reserved"),
    ("safetensors", Entry("bad\udc80", "F32", (2,)), "surrogate"),
    ("npz", Entry("s", "|O", (2,)), "cannot store"),
])
def test_writers_refuse_before_creating_a_file(tmp_path, fmt, entry, message):
    with pytest.raises(CheckpointError, match=message):
        open_output(tmp_path / "out", [Entry("ok", "F32", (2,)), entry], fmt=fmt)
    with pytest.raises(CheckpointError, match="two tensors would be named 'ok'"):
        open_output(tmp_path / "out", [Entry("ok", "F32", (2,)), Entry("ok", "F32", (2,))], fmt=fmt)
    with pytest.raises(CheckpointError, match="metadata must map strings to strings"):
        open_output(tmp_path / "out", [Entry("ok", "F32", (2,))], {"n": 2}, fmt=fmt)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ the atomic writer
def test_atomic_file_publishes_or_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicFile(target) as f:
        f.file.write(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with AtomicFile(target) as f:
        f.file.write(b"new")
        f.sync()
        f.publish()
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert not _PENDING


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_temporary_names_fit_the_filesystem(tmp_path):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    for name in ("x" * name_max, "é" * (name_max // 2), "a.safetensors"):
        with AtomicFile(tmp_path / name) as f:
            assert len(os.fsencode(f.tmp.name)) <= name_max
            assert f.tmp.parent == tmp_path and f.tmp.name.startswith(".") and f.tmp.name.endswith(".tmp")
            f.sync()
            f.publish()
        assert (tmp_path / name).exists()


def test_a_target_that_became_a_directory_is_not_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(CheckpointError, match="is a directory"), AtomicFile(target) as f:
        f.sync()
        target.mkdir()
        f.publish()
    assert target.is_dir() and list(tmp_path.iterdir()) == [target]


def test_signals_deferred_redelivers_after_the_block():
    seen = []
    old = signal.signal(signal.SIGTERM, lambda *a: seen.append("handled"))
    try:
        with signals_deferred():
            signal.raise_signal(signal.SIGTERM)
            seen.append("block finished")
        assert seen == ["block finished", "handled"]
    finally:
        signal.signal(signal.SIGTERM, old)
