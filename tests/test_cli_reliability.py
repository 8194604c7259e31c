"""Hostile files, signals, odd outputs and extreme sizes, end to end through ``transmask mask`` (issue 18).

Every failure must be: exit status 1 (2 for bad arguments), exactly one line on
stderr, no file left in the output directory (no hidden ``.NAME.*.tmp``), and
the input unchanged. Runs go through ``transmask.cli.main`` in-process, or
through ``python -m transmask`` in a subprocess where signals or resource
limits are involved.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

import transmask as tm
from transmask import cli
from transmask.io import CheckpointError, check_output_path

ROOT = Path(tm.__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ helpers
def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def snapshot(d: Path) -> dict[str, bytes | str]:
    """Every entry of a directory: file contents, or the kind of a non-file."""
    return {p.name: p.read_bytes() if p.is_file() else stat.filemode(p.lstat().st_mode)[0] for p in d.iterdir()}


def expect_failure(argv, d: Path, code: int = 1) -> str:
    """Run; assert the clean-failure contract; return the one error line."""
    before = snapshot(d)
    rc, _, err = run(argv)
    lines = err.strip().splitlines()
    assert rc == code, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("transmask"), err
    assert snapshot(d) == before, "an output, a temporary file or a change to the input was left behind"
    return lines[0]


def safetensors_bytes(header, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file from a header (dict, or JSON text taken as it is) and the data."""
    text = (header if isinstance(header, str) else json.dumps(header)).encode("utf-8", "surrogatepass")
    return (len(text) if length is None else length).to_bytes(8, "little") + text + data


def f32_entry(shape, offsets, dtype="F32"):
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


W = np.arange(1, 4 * 8 + 1, dtype=np.float32).reshape(4, 8)  # 128 bytes
VALID = {"w": f32_entry([4, 8], [0, 128])}


def library_rejects(path: Path) -> bool:
    """Whether the safetensors library refuses the file (header check only: what safe_open validates)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except Exception:
        return True
    return False


# ------------------------------------------------------------------------------ 2. outputs that are not regular files
def test_outputs_that_are_not_regular_files_are_refused(tmp_path):
    np.save(tmp_path / "w.npy", W)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "dir"
    directory.mkdir()
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    base = ["mask", tmp_path / "w.npy", "--min-numel", 1]
    try:
        for target, kind in ((fifo, "FIFO"), (directory, "directory"), (sock_path, "socket")):
            for argv in (base + ["-o", target], base + ["-o", tmp_path / "masks.npz", "--pruned", target]):
                line = expect_failure(argv, tmp_path, code=2)
                assert kind in line and target.name in line
        assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISSOCK(sock_path.lstat().st_mode)
    finally:
        sock.close()


def test_device_nodes_are_never_outputs():
    # Checked on the function the CLI calls first, so that no test ever risks writing over /dev/null.
    with pytest.raises(CheckpointError, match="character device"):
        check_output_path("/dev/null")


def test_new_paths_regular_files_and_symlinks_are_fine(tmp_path):
    np.save(tmp_path / "w.npy", W)
    (tmp_path / "old.npz").write_bytes(b"previous")
    real = tmp_path / "real.npz"
    real.write_bytes(b"previous")
    (tmp_path / "link.npz").symlink_to(real)
    for out in ("new.npz", "old.npz", "link.npz"):
        rc, _, err = run(["mask", tmp_path / "w.npy", "--min-numel", 1, "-o", tmp_path / out])
        assert rc == 0, err
    assert (tmp_path / "link.npz").is_symlink()  # the link keeps pointing at the new data
    with np.load(tmp_path / "link.npz") as z:
        np.testing.assert_array_equal(z["w"], tm.optimal_mask(W, 2, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "new.npz", "old.npz", "real.npz", "w.npy"]


# ------------------------------------------------------------------------------ 3. names that collide
def test_duplicate_npz_members_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "dup.npz", "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        for value in (1.0, 2.0):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.full((8, 8), value, np.float32))
            zf.writestr("w.npy", buf.getvalue())
    line = expect_failure(["mask", tmp_path / "dup.npz", "--min-numel", 1, "-o", tmp_path / "m.safetensors"], tmp_path)
    assert "'w'" in line and "member #0" in line and "member #1" in line


@pytest.mark.parametrize("state", ["nested", "int_and_str"])
def test_torch_keys_that_collide_after_flattening_are_refused(tmp_path, state):
    torch = pytest.importorskip("torch")
    t1, t2 = torch.ones(8, 8), torch.full((8, 8), 2.0)
    sd = {"a": {"b": t1}, "a.b": t2} if state == "nested" else {1: t1, "1": t2}
    torch.save(sd, tmp_path / "model.pt")
    line = expect_failure(["mask", tmp_path / "model.pt", "--min-numel", 1, "-o", tmp_path / "m.safetensors"],
                          tmp_path)
    if state == "nested":
        assert "'a.b'" in line and "['a']['b']" in line and "['a.b']" in line
    else:
        assert "'1'" in line and "[1]" in line and "['1']" in line


def test_duplicate_safetensors_keys_are_refused(tmp_path):
    entry = json.dumps(f32_entry([4, 8], [0, 128]))
    path = tmp_path / "dup.safetensors"
    path.write_bytes(safetensors_bytes('{"w": %s, "w": %s}' % (entry, entry), W.tobytes()))
    line = expect_failure(["mask", path, "--min-numel", 1, "-o", tmp_path / "m.safetensors"], tmp_path)
    assert "appears twice" in line


# ------------------------------------------------------------------------------ 4. names a format cannot store
def test_nul_in_tensor_names(tmp_path):
    path = tmp_path / "nul.safetensors"
    header = {"w\0x": f32_entry([4, 8], [0, 128]), "w": f32_entry([4, 8], [128, 256])}
    path.write_bytes(safetensors_bytes(header, W.tobytes() + (2 * W).tobytes()))
    for argv in (["-o", tmp_path / "m.npz"], ["-o", tmp_path / "m.safetensors", "--pruned", tmp_path / "p.npz"]):
        line = expect_failure(["mask", path, "--min-numel", 1, *argv], tmp_path)
        assert "NUL" in line and "\\x00" in line and "\0" not in line
    # safetensors stores such names faithfully: allowed, and the library reads both masks back
    rc, stdout, err = run(["mask", path, "--min-numel", 1, "-o", tmp_path / "m.safetensors"])
    assert rc == 0, err
    assert "w\\x00x" in stdout and "\0" not in stdout  # the table escapes it
    from safetensors.numpy import load_file

    masks = load_file(str(tmp_path / "m.safetensors"))
    assert set(masks) == {"w\0x", "w"}
    np.testing.assert_array_equal(masks["w\0x"], tm.optimal_mask(W, 2, 4))


def test_reserved_and_surrogate_names_are_refused(tmp_path):
    path = tmp_path / "meta.npz"
    np.savez(path, __metadata__=W)  # a tensor named like safetensors' metadata key
    line = expect_failure(["mask", path, "--min-numel", 1, "-o", tmp_path / "m.safetensors"], tmp_path)
    assert "__metadata__" in line and "reserved" in line


# ------------------------------------------------------------------------------ 6. checked before the temporary file
@pytest.mark.parametrize("extra, pruned, text", [
    ({"c": np.ones((2, 2), np.complex128)}, "p.safetensors", "<c16"),
    ({"s": np.array(["ab", "cd"])}, "p.safetensors", "<U2"),
    ({"s": np.array(["ab", "cd"])}, "p.pt", "<U2"),
])
def test_unstorable_dtypes_are_refused_before_any_file_exists(tmp_path, extra, pruned, text):
    if pruned.endswith(".pt"):
        pytest.importorskip("torch")
    np.savez(tmp_path / "in.npz", w=W, **extra)
    line = expect_failure(["mask", tmp_path / "in.npz", "--min-numel", 1, "-o", tmp_path / "m.safetensors",
                           "--pruned", tmp_path / pruned], tmp_path)
    assert text in line and "cannot store" in line


def test_float8_cannot_go_to_npz(tmp_path):
    path = tmp_path / "f8.safetensors"
    header = {"w": f32_entry([4, 8], [0, 128]), "q": f32_entry([8], [128, 136], dtype="F8_E4M3")}
    path.write_bytes(safetensors_bytes(header, W.tobytes() + bytes(range(8))))
    line = expect_failure(["mask", path, "--min-numel", 1, "-o", tmp_path / "m.npz", "--pruned", tmp_path / "p.npz"],
                          tmp_path)
    assert "F8_E4M3" in line
    rc, _, err = run(["mask", path, "--min-numel", 1, "-o", tmp_path / "m.npz", "--pruned", tmp_path / "p.safetensors"])
    assert rc == 0, err
    from safetensors import safe_open

    with safe_open(str(tmp_path / "p.safetensors"), framework="numpy") as f:
        assert f.get_slice("q").get_dtype() == "F8_E4M3"  # float8 passes through safetensors as its bits


def test_meta_tensors_are_named_not_blamed_on_the_dtype(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(8, 8), "ghost": torch.empty(8, 8, device="meta")}, tmp_path / "m.pt")
    rc, out, err = run(["mask", tmp_path / "m.pt", "--min-numel", 1, "-v", "-o", tmp_path / "o.safetensors"])
    assert rc == 0, err
    assert "ghost" in out and "meta device" in out
    (tmp_path / "o.safetensors").unlink()
    line = expect_failure(["mask", tmp_path / "m.pt", "--min-numel", 1, "-o", tmp_path / "o.safetensors",
                           "--pruned", tmp_path / "p.safetensors"], tmp_path)
    assert "'ghost'" in line and "meta device" in line and "dtype" not in line


# ------------------------------------------------------------------------------ 7. m far beyond the tensor
@pytest.mark.parametrize("keep, method, transposable", [("exactly", "exact", True), ("at_most", "exact", True),
                                                        ("exactly", "approx", True), ("exactly", "exact", False)])
@given(rows=st.integers(1, 9), cols=st.integers(1, 9), n=st.integers(1, 12), extra=st.integers(1, 20),
       ties=st.booleans(), seed=st.integers(0, 2**16))
def test_m_beyond_the_tensor_gives_the_same_mask(keep, method, transposable, rows, cols, n, extra, ties, seed):
    """The CLI solves an m larger than the tensor as one partial tile of side max(shape) + 1 (work follows the
    tensor, not m): the mask must be the one the solver gives for the m asked for."""
    rng = np.random.default_rng(seed)
    W2 = rng.integers(0, 3, (rows, cols)).astype(np.float32) if ties else rng.standard_normal((rows, cols))
    m = max(rows, cols, n) + extra if transposable else max(cols, n) + extra
    n = min(n, m)
    solve = cli._Solver(n, m, transposable, method, keep, check=True)
    n_eff, m_eff = solve.effective_nm(W2.shape)
    assert m_eff <= max(rows, cols) + 1
    if transposable:
        expected = tm.optimal_mask(W2, n, m, method=method, keep=keep)
    else:
        expected = tm.nm_mask(W2, n, m)
    np.testing.assert_array_equal(solve._mask2d(W2, n_eff, m_eff), expected)


def test_n_equal_m_keeps_everything_quickly():
    solve = cli._Solver(8, 8, True, "exact", "exactly", check=True)
    assert solve.effective_nm((100, 3)) == (1, 1)
    W2 = np.zeros((5, 7))
    np.testing.assert_array_equal(solve._mask2d(W2, 1, 1), tm.optimal_mask(W2, 8, 8))


def test_huge_m_on_a_small_tensor_finishes(tmp_path):
    """-m 4096 ran for minutes and -m 16384 died at 8.8 GB on a 64 x 64 tensor (the warm-up solved an m x m matrix)."""
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    script = textwrap.dedent(f"""
        import sys, numpy as np, transmask as tm
        from transmask import cli
        w = np.load({str(tmp_path / 'w.npy')!r})
        for n, m in ((2, 4096), (2, 16384), (3, 10**12), (10**9, 10**9)):
            out = {str(tmp_path)!r} + f"/m{{m}}.npz"
            rc = cli.main(["mask", {str(tmp_path / 'w.npy')!r}, "-n", str(n), "-m", str(m), "--min-numel", "1",
                           "-q", "-o", out])
            assert rc == 0, (n, m, rc)
            mask = np.load(out)["w"]
            k = min(n, 64)
            assert (mask.sum(0) <= k).all() and (mask.sum(1) <= k).all()
            np.testing.assert_array_equal(mask, tm.optimal_mask(w, k, 65) if n < m else np.ones_like(mask))
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


# ------------------------------------------------------------------------------ 8. malformed headers
NESTED = "[" * 5000 + "]" * 5000

# (case, header (dict or JSON text), data); each is malformed; `library` says whether the safetensors
# library refuses it too (the rest are files numpy cannot hold: transmask's own refusals).
MALFORMED_SAFETENSORS = [
    ("nested too deep", '{"w": %s}' % NESTED, b"", True),
    ("nested metadata", '{"__metadata__": {"a": %s}}' % NESTED, b"", True),
    ("dtype list", {"w": f32_entry([4, 8], [0, 128], dtype=["F32"])}, W.tobytes(), True),
    ("dtype unknown", {"w": f32_entry([4, 8], [0, 128], dtype="F33")}, W.tobytes(), True),
    ("dtype number", {"w": f32_entry([4, 8], [0, 128], dtype=32)}, W.tobytes(), True),
    ("dtype sub-byte", {"w": f32_entry([4, 8], [0, 16], dtype="F4")}, bytes(16), False),
    ("negative dim", {"w": f32_entry([-4, 8], [0, 128])}, W.tobytes(), True),
    ("minus zero dim", '{"w": {"dtype": "F32", "shape": [-0, 8], "data_offsets": [0, 0]}}', b"", True),
    ("shape string", {"w": f32_entry("44", [0, 128])}, W.tobytes(), True),
    ("shape floats", {"w": f32_entry([64.9, 64.2], [0, 128])}, W.tobytes(), True),
    ("shape float ints", {"w": f32_entry([4.0, 8.0], [0, 128])}, W.tobytes(), True),
    ("shape bool", {"w": f32_entry([True, 32], [0, 128])}, W.tobytes(), True),
    ("shape exponent", '{"w": {"dtype": "F32", "shape": [4e0, 8], "data_offsets": [0, 128]}}', W.tobytes(), True),
    ("shape Infinity", '{"w": {"dtype": "F32", "shape": [Infinity, 8], "data_offsets": [0, 128]}}', W.tobytes(), True),
    ("offsets NaN", '{"w": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, NaN]}}', W.tobytes(), True),
    ("offsets strings", {"w": f32_entry([4, 8], ["0", "128"])}, W.tobytes(), True),
    ("offsets dict", {"w": f32_entry([4, 8], {"0": 128})}, W.tobytes(), True),
    ("offsets three", {"w": f32_entry([4, 8], [0, 128, 128])}, W.tobytes(), True),
    ("offsets reversed", {"w": f32_entry([4, 8], [128, 0])}, W.tobytes(), True),
    ("offsets overlap", {"w": f32_entry([4, 8], [0, 128]), "v": f32_entry([4, 8], [0, 128])}, W.tobytes(), True),
    ("offsets gap", {"w": f32_entry([4, 8], [4, 132])}, bytes(4) + W.tobytes(), True),
    ("offsets out of bounds", {"w": f32_entry([4, 8], [0, 128])}, W.tobytes()[:100], True),
    ("data not covered", {"w": f32_entry([4, 8], [0, 128])}, W.tobytes() + b"tail", True),
    ("size mismatch", {"w": f32_entry([4, 8], [0, 64])}, W.tobytes()[:64], True),
    ("missing field", {"w": {"dtype": "F32", "shape": [4, 8]}}, W.tobytes(), True),
    ("entry not an object", {"w": [0, 128]}, W.tobytes(), True),
    ("metadata list", {"__metadata__": [1], **VALID}, W.tobytes(), True),
    ("metadata number value", {"__metadata__": {"n": 2}, **VALID}, W.tobytes(), True),
    ("header list", "[]", b"", True),
    ("not JSON", "{'w': 1}", b"", True),
    ("trailing NUL", json.dumps(VALID) + "\0", W.tobytes(), True),
    ("byte order mark", "\ufeff" + json.dumps(VALID), W.tobytes(), True),
    ("lone surrogate", '{"w\\udc80": %s}' % json.dumps(VALID["w"]), W.tobytes(), True),
    ("65 dimensions", {"w": f32_entry([1] * 65, [0, 4])}, bytes(4), False),
    ("2**64 dim", {"w": f32_entry([2**64, 0], [0, 0])}, b"", True),
    ("2**63 dim", {"w": f32_entry([2**63, 0], [0, 0])}, b"", False),
    ("overflowing product", {"w": f32_entry([2**40, 2**40, 0], [0, 0])}, b"", True),
]


@pytest.mark.parametrize("case, header, data, library", MALFORMED_SAFETENSORS,
                         ids=[c[0] for c in MALFORMED_SAFETENSORS])
def test_malformed_safetensors_headers(tmp_path, case, header, data, library):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(safetensors_bytes(header, data))
    assert library_rejects(path) == library
    line = expect_failure(["mask", path, "--min-numel", 1, "-o", tmp_path / "m.safetensors",
                           "--pruned", tmp_path / "p.safetensors"], tmp_path)
    assert "bad.safetensors" in line


@pytest.mark.parametrize("blob", [b"", b"\x01\x00", (2**63).to_bytes(8, "little") + b"{}",
                                  (100_000_001).to_bytes(8, "little") + b"{}", (64).to_bytes(8, "little") + b"{}"],
                         ids=["empty", "short", "huge length", "over 100 MB", "past the end"])
def test_malformed_safetensors_lengths(tmp_path, blob):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    assert library_rejects(path)
    expect_failure(["mask", path, "-o", tmp_path / "m.safetensors"], tmp_path)


def _npy_member(header_text: str, data: bytes) -> bytes:
    text = header_text.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def _npz(path: Path, members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compress) as zf:
        for name, blob in members.items():
            zf.writestr(name + ".npy", blob)


MALFORMED_NPZ = [
    ("negative dim", "{'descr': '<f4', 'fortran_order': False, 'shape': (-4, 8), }", W.tobytes()),
    ("bool dim", "{'descr': '<f4', 'fortran_order': False, 'shape': (True, 32), }", W.tobytes()),
    ("float dim", "{'descr': '<f4', 'fortran_order': False, 'shape': (4.0, 8), }", W.tobytes()),
    ("huge dims", "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }",
     W.tobytes()),
    ("65 dimensions", "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % ("1, " * 65), W.tobytes()),
    ("bad descr", "{'descr': '<q9', 'fortran_order': False, 'shape': (4, 8), }", W.tobytes()),
    ("object dtype", "{'descr': '|O', 'fortran_order': False, 'shape': (4, 8), }", W.tobytes()),
    ("fortran not bool", "{'descr': '<f4', 'fortran_order': 'yes', 'shape': (4, 8), }", W.tobytes()),
    ("not a dict", "[1, 2, 3]", W.tobytes()),
    ("code", "__import__('os').system('false')", W.tobytes()),
    ("truncated data", "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 8), }", W.tobytes()[:100]),
    ("no data", "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 8), }", b""),
]


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "compressed"])
@pytest.mark.parametrize("case, header, data", MALFORMED_NPZ, ids=[c[0] for c in MALFORMED_NPZ])
def test_malformed_npz_members(tmp_path, compress, case, header, data):
    _npz(tmp_path / "bad.npz", {"ok": _npy_member(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 8), }", W.tobytes()), "w": _npy_member(header, data)},
        compress)
    line = expect_failure(["mask", tmp_path / "bad.npz", "--min-numel", 1, "-o", tmp_path / "m.safetensors",
                           "--pruned", tmp_path / "p.npz"], tmp_path)
    assert "bad.npz" in line


def test_truncated_npz_archive(tmp_path):
    np.savez(tmp_path / "full.npz", w=np.ones((64, 64), np.float32))
    blob = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "full.npz").unlink()
    for cut in (len(blob) // 2, len(blob) - 30, 10):
        (tmp_path / "cut.npz").write_bytes(blob[:cut])
        expect_failure(["mask", tmp_path / "cut.npz", "-o", tmp_path / "m.safetensors"], tmp_path)
        (tmp_path / "cut.npz").unlink()


def test_corrupt_compressed_member_fails_cleanly_while_reading(tmp_path):
    """A compressed member is only decompressed on load (after the outputs exist): still one line, nothing left."""
    np.savez_compressed(tmp_path / "c.npz", a=np.ones((64, 64), np.float32),
                        w=np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32))
    blob = bytearray((tmp_path / "c.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "c.npz") as zf:
        info = zf.getinfo("w.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    blob[start + info.compress_size - 40: start + info.compress_size - 8] = bytes(32)  # damage the deflate stream
    (tmp_path / "c.npz").write_bytes(bytes(blob))
    line = expect_failure(["mask", tmp_path / "c.npz", "--min-numel", 1, "-o", tmp_path / "m.safetensors",
                           "--pruned", tmp_path / "p.safetensors"], tmp_path)
    assert "'w'" in line


def test_damaged_stored_member_fails_its_crc(tmp_path):
    """Stored members are memory-mapped, bypassing zipfile's CRC check: a flipped bit must not be masked silently."""
    np.savez(tmp_path / "d.npz", w=W)
    blob = bytearray((tmp_path / "d.npz").read_bytes())
    blob[blob.index(W[2, 3].tobytes())] ^= 1
    (tmp_path / "d.npz").write_bytes(bytes(blob))
    line = expect_failure(["mask", tmp_path / "d.npz", "--min-numel", 1, "-o", tmp_path / "m.safetensors"], tmp_path)
    assert "CRC" in line


# ------------------------------------------------------------------------------ 10. long output names
def test_output_names_up_to_the_filesystem_limit(tmp_path):
    np.save(tmp_path / "w.npy", W)
    out = tmp_path / ("m" * 238 + ".safetensors")  # 250 characters: the temporary name must be shorter than that
    pruned = tmp_path / ("p" * 246 + ".npz")
    rc, _, err = run(["mask", tmp_path / "w.npy", "--min-numel", 1, "-o", out, "--pruned", pruned])
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, pruned.name, "w.npy"])
    with np.load(pruned) as z:
        np.testing.assert_array_equal(z["w"], np.where(tm.optimal_mask(W, 2, 4), W, 0))


# ------------------------------------------------------------------------------ 5. signals and 8. full disks
_SHIM = '''
"""Test shim: pauses the transmask command at chosen points so that a signal lands there."""
import importlib.abc, os, sys, time

_marker, _pause = os.environ["TM_TEST_MARKER"], os.environ["TM_TEST_PAUSE"]


class _Pause(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _pause == "import numba" and name == "numba":
            open(_marker, "w").close()
            time.sleep(60)
        if _pause == "solve" and name == "transmask.cli":
            import transmask.masks as masks
            real = masks.optimal_mask

            def slow(W, n, m, **kw):
                if W.size > m * m:  # not the warm-up tile
                    open(_marker, "w").close()
                    time.sleep(60)
                return real(W, n, m, **kw)

            masks.optimal_mask = slow
        return None


sys.meta_path.insert(0, _Pause())
'''


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra.pop("path", None), str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _default_signal_handlers() -> None:
    """In the child: SIGINT/SIGTERM as in a terminal. A test run started in the background (``cmd &`` in a
    non-interactive shell, as CI scripts do) ignores SIGINT, and children inherit that, so Python would
    never raise KeyboardInterrupt and the signal under test would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupt(tmp_path: Path, pause: str, sig: int, args: list) -> subprocess.CompletedProcess:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(_SHIM)
    marker = tmp_path / "shim" / "marker"
    proc = subprocess.Popen([sys.executable, "-m", "transmask", *map(str, args)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_signal_handlers,
                            env=_env(path=str(shim), TM_TEST_MARKER=str(marker), TM_TEST_PAUSE=pause))
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate()[1][-2000:] if proc.poll() is not None else "no marker"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _big_npz(d: Path) -> Path:
    rng = np.random.default_rng(0)
    path = d / "in" / "model.npz"
    path.parent.mkdir()
    np.savez(path, **{f"layer{i}.weight": rng.standard_normal((256, 256)).astype(np.float32) for i in range(3)})
    return path


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_during_a_run_cleans_up(tmp_path, sig, code, word):
    ckpt = _big_npz(tmp_path)
    before = ckpt.read_bytes()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _interrupt(tmp_path, "solve", sig, ["mask", ckpt, "-o", out_dir / "m.safetensors",
                                                "--pruned", out_dir / "p.npz"])
    assert proc.returncode == code, proc.stderr
    assert proc.stderr == f"transmask: {word}" + (" (SIGTERM)" if sig == signal.SIGTERM else "") + "\n"
    assert list(out_dir.iterdir()) == []  # no .m.safetensors.*.tmp, no .p.npz.*.tmp
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_importing_is_one_line(tmp_path, sig, code):
    ckpt = _big_npz(tmp_path)
    proc = _interrupt(tmp_path, "import numba", sig, ["mask", ckpt, "-o", tmp_path / "m.safetensors"])
    assert proc.returncode == code, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("out, pruned", [("m.safetensors", "p.safetensors"), ("m.npz", "p.npz"), ("m.pt", "p.pt")])
def test_full_disk_leaves_no_partial_file(tmp_path, out, pruned):
    """A write that fails half-way (here: over the file-size limit, EFBIG, as ENOSPC would) is one line, exit 1."""
    if out.endswith(".pt"):
        pytest.importorskip("torch")
    ckpt = tmp_path / "in" / "model.npz"
    ckpt.parent.mkdir()
    np.savez(ckpt, w=np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32))  # 4 MB
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    limit = 2 * 2**20

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "transmask", "mask", str(ckpt), "-o", str(out_dir / out),
                           "--pruned", str(out_dir / pruned)], capture_output=True, text=True, timeout=300,
                          env=_env(), preexec_fn=limit_file_size)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "File too large" in proc.stderr, proc.stderr
    assert list(out_dir.iterdir()) == []


# ------------------------------------------------------------------------------ fuzz: malformed headers
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def broken_safetensors(draw) -> bytes:
    header = {"w": f32_entry([4, 8], [0, 128]), "b": f32_entry([3], [128, 134], dtype="F16")}
    data = W.tobytes() + bytes(6)
    kind = draw(st.sampled_from(["field", "drop", "metadata", "duplicate", "text", "length", "cut", "append",
                                 "nest", "token"]))
    name = draw(st.sampled_from(["w", "b"]))
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    text = None
    if kind == "field":
        header[name][field] = draw(_JSON)
    elif kind == "drop":
        del header[name][field]
    elif kind == "metadata":
        header["__metadata__"] = draw(_JSON)
    elif kind == "duplicate":
        text = json.dumps(header)[:-1] + ', "%s": %s}' % (name, json.dumps(header[name]))
    elif kind == "text":
        full = json.dumps(header)
        i = draw(st.integers(0, len(full)))
        text = full[:i] + draw(st.text(min_size=1, max_size=8)) + full[i + draw(st.integers(0, 4)):]
    elif kind == "nest":
        depth = draw(st.integers(100, 3000))
        header[name][field] = "@@"
        text = json.dumps(header).replace('"@@"', "[" * depth + "]" * depth)
    elif kind == "token":
        header[name][field] = "@@"
        token = draw(st.sampled_from(["Infinity", "-Infinity", "NaN", "-0", "1e2", "[4, 8.5]", "[4, -8]", "[1e400]"]))
        text = json.dumps(header).replace('"@@"', token)
    blob = safetensors_bytes(text if text is not None else header, data)
    if kind == "length":
        blob = draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little") + blob[8:]
    elif kind == "cut":
        blob = blob[:draw(st.integers(0, len(blob) - 1))]
    elif kind == "append":
        blob += draw(st.binary(min_size=1, max_size=16))
    return blob


@st.composite
def broken_npz(draw) -> tuple[bytes, bool]:
    """An .npz whose member 'w' is damaged; the flag says whether it is certainly malformed."""
    shape = draw(st.sampled_from(["(-4, 8)", "(True, 32)", "(4.0, 8)", "(4611686018427387904, 4)", "'44'",
                                  "(4, 8, 1, -1)", "None", "(4, 8)", "(4, 8)"]))
    descr = draw(st.sampled_from(["'<f4'", "'<f4'", "'|O'", "'<zz'", "3", "'<f4' '<f4'", "{'a': 1}"]))
    fortran = draw(st.sampled_from(["False", "False", "1", "'no'"]))
    header = "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    data = W.tobytes()
    cut = draw(st.sampled_from([None, None, 0, 50, 127]))
    if cut is not None:
        data = data[:cut]
    valid = (shape, descr, fortran, cut) == ("(4, 8)", "'<f4'", "False", None)
    compress = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as zf:
        zf.writestr("w.npy", _npy_member(header, data))
    blob = bytearray(buf.getvalue())
    if draw(st.booleans()):  # and sometimes damage the archive itself (which may or may not matter)
        i = draw(st.integers(0, len(blob) - 1))
        blob[i] = draw(st.integers(0, 255))
        return bytes(blob), False
    return bytes(blob), not valid


def _fuzz_case(name: str, blob: bytes, must_fail: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        path = d / name
        path.write_bytes(blob)
        rc, _, err = run(["mask", path, "--min-numel", 1, "-o", d / "m.safetensors", "--pruned", d / "p.npz"])
        assert path.read_bytes() == blob  # input unchanged
        left = sorted(p.name for p in d.iterdir())
        if rc == 0:
            assert not must_fail, "a malformed file was read"
            assert left == sorted([name, "m.safetensors", "p.npz"])
        else:
            assert rc == 1 and left == [name], (rc, left, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("transmask: error: "), err


@given(blob=broken_safetensors())
def test_fuzz_malformed_safetensors(blob):
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(blob)
        f.flush()
        rejected = library_rejects(Path(f.name))
    _fuzz_case("in.safetensors", blob, must_fail=rejected)


@given(case=broken_npz())
def test_fuzz_malformed_npz(case):
    blob, malformed = case
    _fuzz_case("in.npz", blob, must_fail=malformed)
