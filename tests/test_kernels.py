"""transmask.kernels: CPU checks in this process, interpreter and GPU-compile suites in subprocesses.

Why subprocesses: Triton picks interpreter or JIT when a kernel is *decorated*
(``TRITON_INTERPRET`` is read at ``@triton.jit`` time, i.e. when
``transmask.kernels`` is first imported), and in one ``python -m pytest`` run
other modules import torch, triton and possibly the kernels long before this
file. So

* ``tests/kernels_interp_cases.py`` (kernels vs dense torch matmul, through the
  interpreter) runs in a fresh interpreter with ``TRITON_INTERPRET=1``;
* ``tests/kernels_compile_cases.py`` (``triton.compile`` for sm_80 and sm_90)
  runs in a fresh interpreter with ``TRITON_INTERPRET`` removed and an empty
  ``TRITON_CACHE_DIR``.

Their pytest output is shown when they fail. Both modules can also be run
directly (see their docstrings). The tests below this process runs use the
CPU fallback (decompress + torch matmul), whatever the environment says.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kernels_masks import transposable_mask  # noqa: E402
from transmask import sparse  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _run_pytest_module(module: str, env_update: dict, drop=(), timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_update)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence triton 3.9's default-change warning
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", str(HERE / module)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, f"{module} failed (exit {proc.returncode}):\n{out}"
    assert " passed" in proc.stdout and " skipped" not in proc.stdout.splitlines()[-1], out
    return out


def test_interpreter_suite():
    """Kernels vs dense torch matmul through Triton's interpreter (~30 s on 2 cores)."""
    _run_pytest_module("kernels_interp_cases.py", {"TRITON_INTERPRET": "1"})


def test_gpu_compile_suite(tmp_path):
    """triton.compile of every kernel variant for sm_80 and sm_90 (~40 s CPU time)."""
    _run_pytest_module("kernels_compile_cases.py", {"TRITON_CACHE_DIR": str(tmp_path / "triton-cache")},
                       drop=("TRITON_INTERPRET",))


def test_import_is_light_and_error_is_clear():
    code = (
        "import sys, transmask\n"
        "assert 'torch' not in sys.modules and 'triton' not in sys.modules, 'import transmask pulled torch/triton'\n"
        "sys.modules['triton'] = None\n"  # simulate a missing triton
        "try:\n"
        "    import transmask.kernels\n"
        "except ImportError as e:\n"
        "    msg = str(e)\n"
        "    assert 'transmask.kernels' in msg and 'pip install' in msg, msg\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- in-process checks on the CPU fallback path (no interpreter, no GPU) -------------------------


@pytest.fixture(scope="module")
def tk():
    import transmask.kernels as tk

    return tk


def test_cpu_fallback_matches_dense(tk):
    rng = np.random.default_rng(0)
    W = torch.randn(20, 30)
    M = transposable_mask(20, 30, 2, 4, rng)
    p = sparse.compress_transposable(W, M, 2, 4)
    x = torch.randn(3, 5, 30)
    Wd = W * torch.from_numpy(M)
    torch.testing.assert_close(tk.nm_linear(x, p.forward), x @ Wd.t())
    # the backward form of a transposable mask multiplies dY @ W, and so does nm_matmul_t on the forward form
    dy = torch.randn(4, 20)
    torch.testing.assert_close(tk.nm_linear(dy, p.backward), dy @ Wd)
    torch.testing.assert_close(tk.nm_matmul_t(dy, p.forward.values, p.forward.indices, 30, 2, 4), dy @ Wd)
    # conversions and the weight gradient at the kept entries, on the torch fallback
    assert torch.equal(tk.nm_decompress(p.forward.values, p.forward.indices, 30, 2, 4), Wd)
    G = torch.randn(20, 30)
    assert torch.equal(tk.nm_compress_like(G, p.forward.indices, 2, 4), sparse.compress(G, M, 2, 4).values)
    xg = torch.randn(4, 30)
    torch.testing.assert_close(tk.nm_sddmm(dy, xg, p.forward.indices, 30, 2, 4),
                               sparse.compress(dy.t() @ xg, M, 2, 4).values)


def test_sparse_linear_cpu_training_step(tk):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    lin = torch.nn.Linear(32, 16)
    M = transposable_mask(16, 32, 2, 4, rng)
    sp = tk.SparseLinear.from_linear(lin, 2, 4, mask=M)
    assert torch.equal(sp.mask(), torch.from_numpy(M))
    assert torch.equal(sp.dense_weight(), lin.weight.detach() * torch.from_numpy(M))
    x = torch.randn(7, 32, requires_grad=True)
    ref_w = (lin.weight.detach() * torch.from_numpy(M)).requires_grad_()
    y = sp(x)
    torch.testing.assert_close(y, x @ ref_w.t() + lin.bias.detach())
    y.square().sum().backward()
    xr = x.detach().clone().requires_grad_()
    (xr @ ref_w.t() + lin.bias.detach()).square().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(sp.values.grad, sparse.compress(ref_w.grad, M, 2, 4).values)
    opt = torch.optim.SGD(sp.parameters(), lr=0.1)
    opt.step()
    # the mask is unchanged by the step, and the backward product follows the new values
    assert torch.equal(sp.mask(), torch.from_numpy(M))
    Wn = sp.dense_weight()
    dy = torch.randn(3, 16)
    torch.testing.assert_close(tk.nm_matmul_t(dy, sp.values.detach(), sp.indices, 32, 2, 4), dy @ Wn)
    # state_dict round trip
    sp2 = tk.SparseLinear(32, 16, 2, 4, mask=M)
    sp2.load_state_dict(sp.state_dict())
    torch.testing.assert_close(sp2(x.detach()), sp(x.detach()))


def test_sparse_linear_stores_values_and_int32_indices_only(tk):
    """No int64 index maps: the layer is close to values + packed indices (0.5625x dense for fp16 2:4)."""
    torch.manual_seed(0)
    sp = tk.SparseLinear(256, 128, 2, 4, bias=False, dtype=torch.float16,
                         mask=transposable_mask(128, 256, 2, 4, np.random.default_rng(0)))
    dense_bytes = 128 * 256 * 2
    tensors = list(sp.parameters()) + list(sp.buffers())
    assert all(t.dtype in (torch.float16, torch.int32) for t in tensors)
    total = sum(t.numel() * t.element_size() for t in tensors)
    assert total == sp.memory_bytes() == dense_bytes * 9 // 16  # 1 byte of values + 1/8 of indices per weight
    assert set(sp.state_dict()) == {"values", "indices"}


def test_n1_padding_slots_get_zero_gradient(tk):
    # 1:4 transposable mask on a cut tile: some groups keep nothing, which n = 1 cannot encode
    # in the index fields; the validity bits keep their gradient at exactly 0
    rng = np.random.default_rng(3)
    M = transposable_mask(10, 9, 1, 4, rng)
    lin = torch.nn.Linear(9, 10)
    sp = tk.SparseLinear.from_linear(lin, 1, 4, mask=M)
    assert sp.valid_bits is not None and torch.equal(sp.mask(), torch.from_numpy(M))
    x = torch.randn(5, 9)
    sp(x).sum().backward()
    from kernels_masks import slot_validity

    valid = slot_validity(sp.compressed(), M)
    assert (~valid).any() and (sp.values.grad[~valid] == 0).all()
    ref = (torch.ones(5, 10).t() @ x)
    torch.testing.assert_close(sp.values.grad[valid], sparse.compress(ref, M, 1, 4).values[valid])


def test_hardware_route_flow_with_a_stand_in(tk, monkeypatch):
    """The 2:4 hardware route's autograd flow and cache, with a CPU stand-in for the CUDA-only semi-structured forms."""
    from transmask.kernels import autograd as ag

    builds = []

    class StandIn:  # what SemiStructuredPair computes, on CPU
        def __init__(self, dense, fused=True):
            builds.append(fused)
            self.dense = dense.float()

        def matmul(self, x):
            return (x.float() @ self.dense.t()).to(x.dtype)

        def matmul_t(self, dy):
            return (dy.float() @ self.dense).to(dy.dtype)

    monkeypatch.setattr(ag, "SemiStructuredPair", StandIn)
    monkeypatch.setattr(ag, "_hw_ok", lambda *args: True)
    monkeypatch.setattr(ag, "uses_triton", lambda x: True)
    torch.manual_seed(0)
    M = transposable_mask(32, 64, 2, 4, np.random.default_rng(4))
    lin = torch.nn.Linear(64, 32)
    sp = tk.SparseLinear.from_linear(lin, 2, 4, mask=M)
    Wd = lin.weight.detach() * torch.from_numpy(M)
    x = torch.randn(tk.SMALL_T + 8, 64, requires_grad=True)
    y = sp(x)
    assert builds == [True]  # built once per call without the cache, freed after backward
    assert ag.last_backends["fwd"] == "hw 2:4"
    y.square().sum().backward()
    xr = x.detach().clone().requires_grad_()
    wr = Wd.clone().requires_grad_()
    (xr @ wr.t() + lin.bias.detach()).square().sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(sp.values.grad, sparse.compress(wr.grad, M, 2, 4).values)
    sp.cache_hw = True
    with torch.no_grad():
        sp(x), sp(x)
        assert len(builds) == 2  # cached while the values are unchanged
        sp.values.add_(1.0)  # an optimizer step bumps the version: rebuilt
        sp(x)
    assert len(builds) == 3
    sp(torch.randn(4, 64))  # few tokens: the Triton route, no hardware forms
    assert len(builds) == 3


def test_step_backends_policy(tk):
    assert tk.step_backends(16, torch.float16, 2, 4, hw_ok=True) == {
        "fwd": "triton", "bwd": "triton", "dw": "triton", "convert": []}
    assert tk.step_backends(4096, torch.float16, 2, 4, hw_ok=True)["fwd"] == "hw 2:4"
    assert tk.step_backends(4096, torch.float16, 2, 4, hw_ok=False) == {
        "fwd": "dense", "bwd": "dense", "dw": "triton", "convert": ["decompress"]}
    assert tk.step_backends(4096, torch.float16, 4, 8, hw_ok=True)["fwd"] == "dense"
    assert tk.step_backends(8, torch.float32, 2, 4, hw_ok=False, on_gpu=False)["fwd"] == "cpu"


def test_argument_errors(tk):
    W = torch.randn(8, 8)
    M = transposable_mask(8, 8, 2, 4, np.random.default_rng(0))
    c = sparse.compress(W, M, 2, 4)
    with pytest.raises(TypeError, match="values dtype"):
        tk.nm_matmul(torch.randn(2, 8, dtype=torch.float16), c.values, c.indices, 8, 2, 4)
    with pytest.raises(ValueError, match="columns"):
        tk.nm_matmul(torch.randn(2, 9), c.values, c.indices, 8, 2, 4)
    with pytest.raises(ValueError, match="columns"):
        tk.nm_matmul_t(torch.randn(2, 9), c.values, c.indices, 8, 2, 4)
    with pytest.raises(ValueError, match="m in"):
        tk.nm_matmul(torch.randn(2, 8), c.values, c.indices, 8, 2, 6)
    with pytest.raises(ValueError, match="method"):
        tk.nm_matmul(torch.randn(2, 8), c.values, c.indices, 8, 2, 4, method="fast")
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        tk.nm_matmul(torch.randn(2, 8, dtype=torch.float64), c.values.double(), c.indices, 8, 2, 4)
    with pytest.raises(ValueError, match="transposable"):
        rowwise = np.zeros((8, 8), bool)
        rowwise[:, :2] = True
        tk.SparseLinear(8, 8, 2, 4, mask=rowwise)
    with pytest.raises(ValueError, match="valid_bits"):
        tk.nm_sddmm(torch.randn(2, 8), torch.randn(2, 8), sparse.compress(W, M & False, 1, 4).indices, 8, 1, 4)
    assert tk.nm_matmul(torch.randn(0, 8), c.values, c.indices, 8, 2, 4).shape == (0, 8)


# ---- bench scripts: skip cleanly without CUDA, and their code paths run end to end -------------------


def _bench_env():
    return {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRANSMASK_GPU_CHECK_DRY")}


def test_bench_matmul_skips_or_smokes(tmp_path):
    bench = ROOT / "bench" / "matmul.py"
    env = _bench_env()
    if not torch.cuda.is_available():
        proc = subprocess.run([sys.executable, str(bench)], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "no CUDA GPU" in proc.stdout
    proc = subprocess.run([sys.executable, str(bench), "--cpu-smoke", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    data = json.loads((tmp_path / "matmul_cpu_smoke.json").read_text())
    ops = {(r["tokens"], r["op"]) for r in data["results"]}
    assert ops == {(t, op) for t in (1, 5) for op in ("fwd", "bwd", "dw", "step")}
    # every sparse output was checked against the dense product before it was timed
    for r in data["results"]:
        assert r["ours_ms"] is not None and r["dense_ms"] is not None, r
        if r["op"] != "step":
            assert r["triton_relerr"] < 1e-5
        else:
            assert r["ours_relerr"] < 1e-5


def test_gpu_check_without_cuda_says_so_in_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: bench/gpu_check.py would run for real")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=_bench_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], proc.stdout


def test_gpu_check_dry_run_end_to_end(tmp_path):
    """The whole GPU check on CPU (interpreter, tiny shapes): sections, error capture, reports, figure 6."""
    import json

    env = {**_bench_env(), "TRANSMASK_GPU_CHECK_DRY": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--quick", "--out", str(tmp_path),
                           "--budget-s", "900",  # generous: a loaded CI machine runs the interpreter slowly
                           "--sections", "smoke,matmul"],  # compile: tests/kernels_compile_cases.py; solver: its own tests
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    rep = json.loads((tmp_path / "gpu.json").read_text())
    assert rep["environment"]["device"] == "dry-run-cpu"
    cases = {c["case"]: c for c in rep["sections"]["smoke"]["cases"]}
    # every Triton kernel ran and matched the dense product; the CUDA-only hardware path failed
    # on CPU and was recorded, not fatal
    hw = [c for name, c in cases.items() if name.startswith("hardware 2:4")]
    assert len(hw) == 1 and not hw[0]["ok"] and hw[0]["error"]
    assert all(c["ok"] for name, c in cases.items() if not name.startswith("hardware 2:4")), cases
    assert any(c.get("deterministic") for c in cases.values())
    assert {r["op"] for r in rep["matmul"]["rows"]} == {"fwd", "bwd", "dw", "step"}
    md = (tmp_path / "gpu.md").read_text()
    assert "## Targets" in md and "**NO**" in md and "## Sparse Linear products" in md
    # figure 6 is rebuilt from gpu.json (a dry run is not a GPU result: placeholder), and from a GPU one it plots
    assert json.loads((tmp_path / "fig6" / "fig6_matmul_speedup.json").read_text())["available"] is False
    rep["environment"]["device"] = rep["matmul"]["meta"]["device"] = "Test GPU"
    (tmp_path / "gpu.json").write_text(json.dumps(rep))
    sys.path.insert(0, str(ROOT / "paper_figs"))
    import fig6_matmul_speedup as fig6

    res = fig6.main(["--results", str(tmp_path), "--out", str(tmp_path / "fig")])
    assert res["available"] is True and (tmp_path / "fig" / "fig6_matmul_speedup.png").exists()


def test_sparse_linear_default_mask_is_optimal_transposable(tk):
    import transmask as tm

    torch.manual_seed(0)
    sp = tk.SparseLinear(30, 18, 4, 8)  # cut tiles in both dimensions
    M = sp.mask().numpy()
    assert tm.is_transposable(M, 4, 8, keep="at_most")
    W = sp.dense_weight().numpy()
    assert sp(torch.randn(3, 30)).shape == (3, 18)
    assert np.isclose(tm.kept_l1(W, M), np.abs(W).sum())
