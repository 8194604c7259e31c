#!/usr/bin/env python
"""The GPU check: one script that a session with a CUDA GPU runs once (about 5 minutes, `--quick` about 1).

    python bench/gpu_check.py             # ~5 min: writes bench/results/gpu.{json,md}, rebuilds paper figure 6
    python bench/gpu_check.py --quick     # smaller; writes to a temporary folder (published results untouched)

Without CUDA it prints one line saying so and exits 0.

Sections, each in its own Python process (a kernel that faults or hangs loses its section
only; the others and everything already measured are kept), in this order:

0. ``compile`` the benchmark's kernel specialisations compiled in parallel processes into Triton's
               cache (the keys a launch looks up), so that the timed sections do not wait on ptxas.
1. ``smoke``   every kernel compiled for this GPU (compiled code can differ from the
               interpreter the CPU tests use) against the dense fp32 product: both products of
               the Triton kernel for 2:4 fp16/bf16/fp32, 1:4, 4:8, 3:8, 8:16, odd shapes, split-K
               and its determinism; expansion, compression, the fused weight gradient; the
               SparseLinear training step for few and many tokens (incl. the hardware 2:4 route);
               the hardware forms of ``W`` and ``W.T``.
2. ``matmul:<W>`` for each weight shape: ``bench/matmul.py``'s timings (forward, input gradient,
               weight gradient, full autograd step; dense cuBLAS, ours, the Triton kernel, expand +
               cuBLAS, ``to_sparse_semi_structured``) at 1 to 16384 tokens.
3. ``solver``  ``bench/_gpu_solver_check.py``'s ``run(quick)`` (the GPU mask solver), when that file exists.

Every measurement is wrapped: an error is recorded with its text and the run goes on.
Progress is printed as it goes and the results file is rewritten after every section (and by
the sections themselves as they progress), so a run cut short still leaves its numbers.
Results: ``gpu.json`` (device, versions, every timing as do_bench medians with the L2 flushed,
ratios to cuBLAS dense and to the hardware 2:4 path, correctness of every output) and
``gpu.md``; figure 6 (``paper_figs/fig6_matmul_speedup.py``) is rebuilt from ``gpu.json``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

SHAPES = ["4096x11008", "4096x4096"]  # the main target first
TOKENS = [1, 16, 32, 128, 1024, 4096, 16384]
QUICK_TOKENS = [16, 4096]
SOLVER_FILE = ROOT / "bench" / "_gpu_solver_check.py"
# TRANSMASK_GPU_CHECK_DRY=1: run the whole script on CPU (kernels through Triton's interpreter, tiny
# shapes, wall-clock timer) to test the script itself; the numbers mean nothing
DRY = os.environ.get("TRANSMASK_GPU_CHECK_DRY") == "1"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one shape, two token counts, short solver check (~1 min)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default bench/results; --quick: a temporary folder)")
    p.add_argument("--budget-s", type=float, default=None, help="wall-clock budget (default 330 s, quick 100 s)")
    p.add_argument("--no-fig", action="store_true", help="do not rebuild figure 6")
    p.add_argument("--sections", default=None,
                   help="comma-separated subset of compile,smoke,matmul,solver (default: all)")
    p.add_argument("--section", default=None, help=argparse.SUPPRESS)  # internal: run one section
    p.add_argument("--partial", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline-s", type=float, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _err(exc) -> str:
    return f"{type(exc).__name__}: {str(exc)[:400]}"


def _write(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------- sections (child process)


def section_smoke(partial: Path, quick: bool) -> dict:
    """Every kernel on this GPU against the dense fp32 product; one record per case."""
    import numpy as np
    import torch

    import transmask.kernels as tk
    from transmask import sparse
    from transmask.kernels.semi_structured import SemiStructuredPair, hw_supported

    from matmul import random_transposable_mask

    dev = torch.device("cpu" if DRY else "cuda")
    cases = []
    tol = {torch.float16: 2e-2, torch.bfloat16: 3e-2, torch.float32: 2e-3}

    def record(name, fn):
        t0 = time.perf_counter()
        try:
            err, detail = fn()
            ok = err is None or err <= detail.get("tol", 1.0)
            cases.append({"case": name, "ok": bool(ok), "max_rel_err": err, **detail,
                          "seconds": round(time.perf_counter() - t0, 2)})
        except Exception as exc:
            cases.append({"case": name, "ok": False, "error": _err(exc), "trace": traceback.format_exc()[-1500:],
                          "seconds": round(time.perf_counter() - t0, 2)})
        c = cases[-1]
        print(f"  smoke {'ok  ' if c['ok'] else 'FAIL'} {name} ({c['seconds']} s) {c.get('error', '')}", flush=True)
        _write(partial, {"cases": cases})

    def rel(out, ref):
        return (out.float() - ref).abs().max().item() / (ref.abs().max().item() + 1e-6)

    def weight(R, K, n, m, dtype, transposable=False, seed=0):
        rng = np.random.default_rng(seed)
        W = torch.from_numpy(rng.standard_normal((R, K)).astype(np.float32))
        if transposable:
            M = random_transposable_mask(R, K, n, m, seed)
        else:
            M = np.zeros((R, K), bool)
            for r in range(R):
                for g in range(0, K, m):
                    L = min(m, K - g)
                    M[r, g + rng.choice(L, min(n, L) - (rng.random() < 0.2 and n > 1), replace=False)] = True
        c = sparse.compress(W.to(dtype), M, n, m)
        c = sparse.CompressedNM(c.values.to(dev), c.indices.to(dev), c.shape, n, m)
        return c, (W * torch.from_numpy(M)).to(dtype).float().to(dev), M

    product_cases = [
        # (R, K, T, n, m, dtype, split)
        (4096, 4096, 16, 2, 4, torch.float16, None),
        (4096, 11008, 1, 2, 4, torch.float16, None),
        (1000, 1544, 17, 2, 4, torch.float16, None),  # unaligned value rows, cut tiles
        (512, 768, 24, 2, 4, torch.bfloat16, 3),
        (512, 768, 40, 2, 4, torch.float16, None),  # > SMALL_T through the Triton kernel
        (300, 500, 7, 2, 4, torch.float32, 2),
        (256, 520, 5, 1, 4, torch.float16, 2),
        (256, 520, 9, 4, 8, torch.float16, 1),
        (256, 520, 9, 3, 8, torch.float16, 2),
        (256, 520, 9, 8, 16, torch.float16, 2),
        (128, 300, 3, 16, 32, torch.bfloat16, 1),
    ]
    if quick:
        product_cases = product_cases[:3] + product_cases[6:8]
    if DRY:  # interpreter speed: same cases, small matrices
        product_cases = [(min(R, 48), min(K, 3 * m + 70), min(T, 20), n, m, dt, sp)
                         for R, K, T, n, m, dt, sp in product_cases]
    for R, K, T, n, m, dtype, split in product_cases:
        def run(R=R, K=K, T=T, n=n, m=m, dtype=dtype, split=split):
            c, Wf, _ = weight(R, K, n, m, dtype, seed=R + K + T)
            x = torch.randn(T, K, device=dev, dtype=dtype)
            dy = torch.randn(T, R, device=dev, dtype=dtype)
            y = tk.nm_matmul(x, c.values, c.indices, K, n, m, method="triton", split=split)
            dx = tk.nm_matmul_t(dy, c.values, c.indices, K, n, m, method="triton", split=split)
            y2 = tk.nm_matmul(x, c.values, c.indices, K, n, m, method="triton", split=split)
            err = max(rel(y, x.float() @ Wf.t()), rel(dx, dy.float() @ Wf))
            return err, {"tol": tol[dtype], "deterministic": bool(torch.equal(y, y2)),
                         "word_path": tk.word_path(dtype, n, m)}
        record(f"products {R}x{K} T={T} {n}:{m} {str(dtype)[6:]} split={split}", run)

    def conversions():
        errs = []
        for n, m, dtype in ((2, 4, torch.float16), (1, 4, torch.bfloat16), (4, 8, torch.float32), (3, 8, torch.float16)):
            c, Wf, M = weight(40 if DRY else 200, 4 * m + 3 + 64, n, m, dtype, seed=n * m)
            K = c.shape[1]
            dense = tk.nm_decompress(c.values, c.indices, K, n, m)
            errs.append(0.0 if torch.equal(dense.float(), Wf) else 1.0)
            R = c.shape[0]
            G = torch.randn(R, K, device=dev, dtype=dtype)
            valid = None
            if n == 1:
                idx = c.unpacked_indices()
                cols = idx + (torch.arange(c.slots, device=dev) // n * m)[None, :]
                Mp = torch.zeros(R, c.groups * m, dtype=torch.bool, device=dev)
                Mp[:, :K] = torch.from_numpy(M).to(dev)
                valid = torch.gather(Mp, 1, cols)
            vb = tk.valid_bitmask(c.indices, K, n, m, valid)
            want = sparse.compress(G.cpu(), M, n, m).values.to(dev)
            errs.append(0.0 if torch.equal(tk.nm_compress_like(G, c.indices, n, m, valid_bits=vb), want) else 1.0)
            T = 20 if DRY else 70
            dy = torch.randn(T, R, device=dev, dtype=dtype)
            x = torch.randn(T, K, device=dev, dtype=dtype)
            ref = sparse.compress((dy.float().t() @ x.float()).cpu(), M, n, m).values.to(dev)
            errs.append(rel(tk.nm_sddmm(dy, x, c.indices, K, n, m, valid_bits=vb), ref))
        return max(errs), {"tol": 2e-2}
    record("decompress / compress exact, fused dW (4 formats)", conversions)

    def linear_step(T, n, m, dtype, R=512, K=1024):
        if DRY:
            R, K, T = 32, 64, min(T, 40)

        def run():
            W = torch.randn(R, K)
            M = random_transposable_mask(R, K, n, m, 1)
            lin = tk.SparseLinear.from_dense(W, n, m, mask=M).to(dev, dtype)
            x = torch.randn(T, K, device=dev, dtype=dtype, requires_grad=True)
            g = torch.randn(T, R, device=dev, dtype=dtype)
            lin(x).backward(g)
            from transmask.kernels import autograd as ag

            ran = dict(ag.last_backends or {})
            Wd = (W * torch.from_numpy(M)).to(dev, dtype).float()
            xr = x.detach().float()
            err = max(rel(x.grad, g.float() @ Wd), rel(lin.values.grad, sparse.compress((g.float().t() @ xr).cpu(), M, n, m)
                                                       .values.to(dev)))
            want = tk.step_backends(T, dtype, n, m, hw_supported((R, K), dtype, n, m, dev), on_gpu=True)
            if ran != want:
                raise AssertionError(f"the step ran {ran}, the plan for this GPU is {want}")
            return err, {"tol": tol[dtype], "backends": ran}
        return run
    for T, n, m, dtype in ((8, 2, 4, torch.float16), (256, 2, 4, torch.float16), (256, 2, 4, torch.bfloat16),
                           (64, 4, 8, torch.float16), (5, 1, 4, torch.float16)):
        record(f"SparseLinear step T={T} {n}:{m} {str(dtype)[6:]}", linear_step(T, n, m, dtype))

    def hw_pair():
        R, K = 512, 1024
        W = torch.randn(R, K)
        M = random_transposable_mask(R, K, 2, 4, 2)
        Wd = (W * torch.from_numpy(M)).to(dev, torch.float16)
        x = torch.randn(64, K, device=dev, dtype=torch.float16)
        dy = torch.randn(64, R, device=dev, dtype=torch.float16)
        errs = {}
        for fused in (True, False):
            p = SemiStructuredPair(Wd, fused=fused)
            errs[f"fused={fused}"] = max(rel(p.matmul(x), x.float() @ Wd.float().t()), rel(p.matmul_t(dy), dy.float() @ Wd.float()))
        return max(errs.values()), {"tol": 2e-2, "per_build": errs, "backend": p.backend}
    record("hardware 2:4 forms of W and W.T (to_sparse_semi_structured / fused prune)", hw_pair)
    return {"cases": cases}


def _compile_task(task):
    """Worker: compile one runtime specialisation into Triton's cache (no CUDA needed)."""
    R, K, T, op, idx, arch, sms = task
    import torch

    from transmask.kernels import compiled as C

    spec = C.runtime_specialisations(R, K, T, torch.float16, 2, 4, op=op, arch=arch, sms=sms)[idx]
    t0 = time.perf_counter()
    C.compile_specialisation(spec, arch)
    return f"{spec.kernel} {spec.name}", round(time.perf_counter() - t0, 1)


def section_compile(partial: Path, quick: bool, deadline: float | None) -> dict:
    """Compile the benchmark's specialisations in parallel worker processes, so the timed sections find them cached.

    The keys are the ones a launch looks up (same binder, configs and options:
    :func:`transmask.kernels.compiled.compile_specialisation`); anything not done by the
    deadline is compiled on first use as usual.
    """
    import concurrent.futures as cf
    import multiprocessing

    import torch

    from transmask.kernels import compiled as C

    major, minor = torch.cuda.get_device_capability(0) if not DRY else (9, 0)
    arch = 10 * major + minor
    sms = torch.cuda.get_device_properties(0).multi_processor_count if not DRY else 132
    tasks, seen = [], set()
    for shape in (SHAPES[:1] if quick else SHAPES):
        R, K = map(int, shape.split("x"))
        for T in (QUICK_TOKENS if quick else TOKENS):
            for op in ("fwd", "bwd", "dw", "decompress", "compress"):
                for i, sp in enumerate(C.runtime_specialisations(R, K, T, torch.float16, 2, 4, op=op, arch=arch, sms=sms)):
                    key = (sp.kernel, repr(sorted(sp.constexprs.items())), repr(sorted(sp.attrs.items())),
                           repr(sorted(sp.signature.items())), sp.num_warps, sp.num_stages)
                    if key not in seen:
                        seen.add(key)
                        tasks.append((R, K, T, op, i, arch, sms))
    if DRY:  # rehearsal of the mechanism only
        tasks = tasks[:1]
    done, errors = [], []
    workers = max(1, min(16, (os.cpu_count() or 2) - 1, len(tasks)))
    print(f"  compiling {len(tasks)} specialisations for sm_{arch} on {workers} processes", flush=True)
    ex = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    futures = {ex.submit(_compile_task, t): t for t in tasks}
    try:
        timeout = None if deadline is None else max(deadline - time.monotonic(), 1)
        for fut in cf.as_completed(futures, timeout=timeout):
            try:
                done.append(fut.result())
            except Exception as exc:
                errors.append({"task": futures[fut], "error": _err(exc)})
            _write(partial, {"compiled": done, "errors": errors, "planned": len(tasks)})
    except cf.TimeoutError:
        errors.append({"error": f"deadline: {len(tasks) - len(done)} left to compile on first use"})
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
    print(f"  compiled {len(done)}/{len(tasks)}, {len(errors)} error(s)", flush=True)
    state = {"compiled": done, "errors": errors, "planned": len(tasks), "arch": arch}
    _write(partial, state)
    return state


def section_matmul(partial: Path, quick: bool, shape: str, deadline: float | None) -> dict:
    import matmul

    tokens = QUICK_TOKENS if quick else TOKENS
    state = {}

    def save_rows(meta, rows):
        state.update(meta=meta, rows=rows)
        _write(partial, state)

    def progress(msg):
        print("  " + msg, flush=True)

    if DRY:
        shape, tokens = "48x64", [1, 40] if not quick else [40]
    meta, rows = matmul.run([shape], tokens, "fp16" if not DRY else "fp32", 2, 4, deadline=deadline, progress=progress,
                            on_rows=save_rows, smoke=DRY)
    state.update(meta=meta, rows=rows)
    _write(partial, state)
    return state


def section_solver(partial: Path, quick: bool, deadline: float | None) -> dict:
    """``bench/_gpu_solver_check.py``'s ``run`` (issue 19), within this section's time, saving as it goes."""
    import importlib.util
    import inspect

    spec = importlib.util.spec_from_file_location("_gpu_solver_check", SOLVER_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    accepted = inspect.signature(mod.run).parameters
    kwargs = {"deadline": deadline, "on_partial": lambda res: _write(partial, {"result": res})}
    if DRY:  # rehearsal: CPU (interpreter), tiny matrix
        kwargs.update(device="cpu", size=64, budget_s=30)
    res = mod.run(quick=quick, **{k: v for k, v in kwargs.items() if k in accepted})
    _write(partial, {"result": res})
    return {"result": res}


def child_main(args) -> int:
    deadline = None if args.deadline_s is None else time.monotonic() + args.deadline_s
    name = args.section
    if name == "compile":
        section_compile(args.partial, args.quick, deadline)
    elif name == "smoke":
        section_smoke(args.partial, args.quick)
    elif name.startswith("matmul:"):
        section_matmul(args.partial, args.quick, name.split(":", 1)[1], deadline)
    elif name == "solver":
        section_solver(args.partial, args.quick, deadline)
    else:
        raise SystemExit(f"unknown section {name!r}")
    return 0


# ----------------------------------------------------------------------------------- orchestration (parent)


def environment() -> dict:
    import torch
    import triton

    import transmask

    if DRY:
        return {"device": "dry-run-cpu", "capability": [0, 0], "sms": 0, "torch": torch.__version__,
                "triton": triton.__version__, "transmask": transmask.__version__, "cuda": None, "cusparselt": None,
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git_commit": None}

    props = torch.cuda.get_device_properties(0)
    env = {
        "device": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "sms": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "transmask": transmask.__version__,
        "python": sys.version.split()[0],
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        env["cusparselt"] = torch.backends.cusparselt.version() if torch.backends.cusparselt.is_available() else None
    except Exception as exc:
        env["cusparselt"] = _err(exc)
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except Exception:
        env["git_commit"] = None
    return env


def run_section(name: str, args, remaining: float, workdir: Path) -> dict:
    """Run one section in a child process with a timeout; return its (possibly partial) results."""
    partial = workdir / f"{name.replace(':', '_')}.json"
    partial.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--partial", str(partial),
           "--deadline-s", str(max(remaining - 20, 10))]
    if args.quick:
        cmd.append("--quick")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if DRY and name != "compile":  # compiling for a GPU target needs the real JIT, not the interpreter
        env["TRITON_INTERPRET"] = "1"
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    t0 = time.monotonic()
    status = "ok"
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        tail = []
        for line in proc.stdout:  # progress as it comes; keep the tail for the error record
            print(line, end="", flush=True)
            tail = (tail + [line])[-30:]
            if time.monotonic() - t0 > max(remaining, 15):
                proc.kill()
                raise subprocess.TimeoutExpired(cmd, remaining)
        rc = proc.wait(timeout=max(remaining - (time.monotonic() - t0), 5))
        if rc != 0:
            status = f"exit {rc}: {''.join(tail)[-1500:]}"
    except subprocess.TimeoutExpired:
        proc.kill()
        status = f"timed out after {remaining:.0f} s"
    out = json.loads(partial.read_text()) if partial.exists() else {}
    out["status"] = status
    out["seconds"] = round(time.monotonic() - t0, 1)
    print(f"# section {name}: {status.splitlines()[0] if status else ''} ({out['seconds']} s)", flush=True)
    return out


def targets(rows) -> list[tuple[str, str, str]]:
    """The issue's GPU targets, read off the matmul rows: (target, measured speed-ups, met?)."""
    def pick(pred):
        return [(r["shape"], r["tokens"], r["op"], r.get("ours_speedup")) for r in rows if r.get("op") in OPS_T and pred(r)]

    def fmt(sel):
        return ", ".join(f"{s[0]}x{s[1]} T={t} {op} {x:.2f}x" if x else f"{s[0]}x{s[1]} T={t} {op} -" for s, t, op, x in sel)

    def met(sel, bound):
        if not sel or any(x is None for *_, x in sel):
            return "not measured"
        return "yes" if all(x >= bound for *_, x in sel) else "**no**"

    out = []
    small = pick(lambda r: r["tokens"] <= 16 and r["op"] in ("fwd", "bwd") and tuple(r["shape"]) in ((4096, 4096), (4096, 11008)))
    out.append((">= 1.5x dense at <= 16 tokens, fwd W and bwd W.T", fmt(small), met(small, 1.5)))
    large = pick(lambda r: r["tokens"] >= 1024 and r["op"] in ("fwd", "bwd"))
    out.append((">= 1.0x on large forward and backward GEMMs", fmt(large), met(large, 1.0)))
    step = pick(lambda r: r["op"] == "step")
    out.append(("training step of a sparse Linear no slower than dense", fmt(step), met(step, 1.0)))
    return out


OPS_T = ("fwd", "bwd", "dw", "step")


def to_markdown(report: dict) -> str:
    import matmul

    env = report["environment"]
    lines = [f"# GPU check: {env.get('device')} (sm_{''.join(map(str, env.get('capability', [])))}, "
             f"{env.get('sms')} SMs)", "",
             f"{env.get('date', '')[:19]}; torch {env.get('torch')}, CUDA {env.get('cuda')}, cuSPARSELt "
             f"{env.get('cusparselt')}, triton {env.get('triton')}, transmask {env.get('transmask')} "
             f"({(env.get('git_commit') or '')[:10]}); `python bench/gpu_check.py{' --quick' if report['quick'] else ''}`, "
             f"{report.get('seconds')} s.", ""]
    lines += ["## Sections", "", "| section | status | seconds |", "|---|---|---:|"]
    for name, sec in report["sections"].items():
        lines.append(f"| {name} | {str(sec.get('status', '')).splitlines()[0][:120]} | {sec.get('seconds')} |")
    smoke = report["sections"].get("smoke", {}).get("cases", [])
    if smoke:
        lines += ["", "## Correctness on this GPU (vs the dense fp32 product)", "",
                  "| case | ok | max rel err | note |", "|---|---|---:|---|"]
        for c in smoke:
            note = (c.get("error") or ", ".join(f"{k}={v}" for k, v in c.items()
                                                 if k in ("deterministic", "backends", "backend", "word_path")))[:240]
            err = c.get("max_rel_err")
            lines.append(f"| {c['case']} | {'yes' if c['ok'] else '**NO**'} | "
                         f"{'-' if err is None else f'{err:.2e}'} | {note} |")
    rows = report.get("matmul", {}).get("rows", [])
    if rows:
        lines += ["", "## Targets (issue 16)", "", "| target | measured | met |", "|---|---|---|"]
        for name, vals, ok in targets(rows):
            lines.append(f"| {name} | {vals} | {ok} |")
        lines += ["", "## Sparse Linear products (2:4 fp16)", "", matmul.markdown(rows, report["matmul"].get("meta", {}))]
    solver = report["sections"].get("solver")
    if solver is not None:
        lines += ["", "## GPU mask solver", ""]
        res = solver.get("result")
        if not isinstance(res, dict):
            lines.append(f"No result ({solver.get('status')}).")
        else:
            md = next((v for k, v in res.items() if isinstance(v, str) and ("markdown" in k or k in ("md", "table"))), None)
            lines.append(md if md else "```\n" + json.dumps(res, indent=1, default=str)[:4000] + "\n```")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.section:
        return child_main(args)
    try:
        import torch
    except ImportError:
        print("bench/gpu_check.py: torch is not installed, so there is no CUDA GPU to check; nothing to do (exit 0).")
        return 0
    if not torch.cuda.is_available() and not DRY:
        print("bench/gpu_check.py: no CUDA GPU available (torch.cuda.is_available() is False); nothing to time, exit 0.")
        return 0
    t_start = time.monotonic()
    budget = args.budget_s or (100.0 if args.quick else 330.0)
    if DRY and args.out is None:
        raise SystemExit("a dry run needs --out (it must not touch the published results)")
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu_check_")) if args.quick else ROOT / "bench" / "results")
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check_parts_"))
    report = {"environment": environment(), "quick": bool(args.quick), "sections": {}, "matmul": {}}
    print(f"# gpu_check on {report['environment']['device']}: budget {budget:.0f} s, results in {out}", flush=True)
    shapes = SHAPES[:1] if args.quick else SHAPES
    plan = ["compile", "smoke"] + [f"matmul:{s}" for s in shapes] + (["solver"] if SOLVER_FILE.exists() else [])
    if args.sections:
        wanted = set(args.sections.split(","))
        plan = [p for p in plan if p.split(":")[0] in wanted]
    # time shares: compile, smoke and solver get fixed slices, the matmul sections split the rest
    fixed = {"compile": 0.12 * budget, "smoke": 0.18 * budget, "solver": 0.25 * budget}

    def save():
        report["seconds"] = round(time.monotonic() - t_start, 1)
        _write(out / "gpu.json", report)
        (out / "gpu.md").write_text(to_markdown(report))

    for i, name in enumerate(plan):
        remaining = budget - (time.monotonic() - t_start)
        later = plan[i + 1:]
        if name in fixed:
            share = min(remaining, fixed[name])
        else:  # this matmul section's part of what the fixed sections after it leave
            left = remaining - sum(fixed[s] for s in later if s in fixed)
            share = left / sum(1 for s in [name] + later if s.startswith("matmul:"))
        if remaining < 15:
            report["sections"][name] = {"status": "skipped: time budget spent"}
            continue
        print(f"# section {name} ({share:.0f} s allowed)", flush=True)
        sec = run_section(name, args, max(share, 15), workdir)
        if name.startswith("matmul:"):
            report["matmul"].setdefault("meta", sec.get("meta", {}))
            report["matmul"].setdefault("rows", []).extend(sec.get("rows", []))
            sec = {k: v for k, v in sec.items() if k not in ("rows", "meta")}
        report["sections"][name] = sec
        save()
    if "solver" not in report["sections"]:
        report["sections"]["solver"] = {"status": "not run: " + (f"{SOLVER_FILE.relative_to(ROOT)} does not exist"
                                                                  if not SOLVER_FILE.exists() else "not selected")}
    save()
    if not args.no_fig:
        try:
            sys.path.insert(0, str(ROOT / "paper_figs"))
            import fig6_matmul_speedup as fig6

            fig_out = ["--out", str(out / "fig6")] if (args.quick or DRY) else []
            fig6.main(["--results", str(out)] + fig_out)
        except Exception as exc:
            report["figure_error"] = _err(exc)
            save()
            print(f"# figure 6 not rebuilt: {report['figure_error']}")
    bad = [c["case"] for c in report["sections"].get("smoke", {}).get("cases", []) if not c["ok"]]
    print(f"# done in {report['seconds']} s: {out / 'gpu.json'}, {out / 'gpu.md'}"
          + (f"; {len(bad)} smoke case(s) FAILED: {bad}" if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
