#!/usr/bin/env python
"""Bench: the products of an N:M sparse Linear (transposable mask) vs dense cuBLAS and PyTorch's hardware 2:4 path.

    python bench/matmul.py                 # full run on a CUDA GPU (a few minutes incl. autotuning)
    python bench/matmul.py --quick         # 4096x11008, tokens 16 and 4096
    python bench/matmul.py --tokens 1 16 4096 --shapes 4096x4096

Without CUDA it prints why and exits 0 (nothing is timed on CPU: the kernels' CPU path is a
decompress-and-matmul fallback, and the interpreter is a test tool). ``bench/gpu_check.py``
imports this module and runs it as one section of the GPU check.

Timer: ``triton.testing.do_bench``, median of ``--rep`` ms after ``--warmup`` ms, CUDA events
around each call. do_bench **flushes the L2 cache** (it zeroes a 256 MB buffer) before every
timed call, so every call reads its weights from HBM, as the layers of a large model do.
Compression, hardware-format builds and autotuning happen before timing unless a row says
otherwise. Every method's output is checked against the fp32 product of the dense masked
weight first (``*_relerr``: max abs error / max abs reference); a method that fails the
check or raises is recorded with its error text and not timed.

For every weight shape ``W: (out_features, in_features)`` and token count ``T``:

``fwd``   ``Y = X @ W.T``
``bwd``   ``dX = dY @ W`` (needs ``W.T`` 2:4 for the hardware path: the transposable mask)
``dw``    the weight gradient: dense ``dY.T @ X`` for cuBLAS; only the kept entries for ours
``step``  one full autograd step of the layer, ``y = linear(x, W); y.backward(g)``, i.e.
          forward + ``dX`` + ``dW`` + whatever gathers, builds and casts each method pays
          (for ours at many tokens this includes rebuilding the 2:4 hardware forms, which an
          optimizer step invalidates)
``build`` (2:4 only, once per shape) the hardware forms from the compressed weight: one
          fused build of ``W`` and ``W.T``, two ``to_sparse_semi_structured`` calls, and the
          expansion to dense that both start from

Methods (columns ``<method>_ms``, ``<method>_speedup`` = ``dense_ms / <method>_ms``):

``dense``    cuBLAS on the masked dense weight (the baseline)
``ours``     what :class:`transmask.kernels.SparseLinear` runs at this ``T``
             (``transmask.kernels.step_backends``; ``ours_backend`` says which)
``triton``   our Triton kernel forced (``method="triton"``; dw: the fused SDDMM)
``expand``   expand to dense (Triton) + cuBLAS, expansion timed in (dw: cuBLAS + compress)
``hw``       ``to_sparse_semi_structured`` forms of ``W`` and ``W.T`` (2:4 fp16/bf16 only)

``ours_vs_hw`` = ``hw_ms / ours_ms``. Results: printed table, ``<out>/matmul_<device>.json``
and ``.md`` (``--out``, default ``bench/results``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_SHAPES = ["4096x4096", "4096x11008", "11008x4096"]  # (out_features x in_features), LLaMA-7B-like
DEFAULT_TOKENS = [1, 16, 32, 128, 1024, 4096, 16384]
QUICK = (["4096x11008"], [16, 4096])
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
METHODS = ("dense", "ours", "triton", "expand", "hw")
OPS = ("fwd", "bwd", "dw", "step")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="weight shapes OUTxIN")
    p.add_argument("--tokens", nargs="+", type=int, default=DEFAULT_TOKENS)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--m", type=int, default=4)
    p.add_argument("--mask", choices=["random", "optimal"], default="random")
    p.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms")
    p.add_argument("--rep", type=int, default=100, help="do_bench repetition time, ms")
    p.add_argument("--quick", action="store_true", help="one shape, tokens 16 and 4096")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="exercise the script end to end on CPU (tiny shapes, CPU fallback, wall-clock timer); "
                        "for tests only, the numbers mean nothing")
    return p.parse_args(argv)


def random_transposable_mask(rows: int, cols: int, n: int, m: int, seed: int = 0) -> np.ndarray:
    """Transposable n:m mask: in tile (a, b), keep (i, j) iff (j - i - shift[a, b]) mod m < n."""
    rng = np.random.default_rng(seed)
    TR, TC = -(-rows // m), -(-cols // m)
    shift = rng.integers(0, m, size=(TR, TC))
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    s = shift[i // m, j // m]
    return ((j % m - i % m - s) % m) < n


def device_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def make_timer(smoke: bool, warmup: int = 25, rep: int = 100):
    """``timer(fn, grads=None) -> ms``: do_bench median on CUDA (L2 flushed per call), one wall-clock call in smoke mode."""
    import torch

    def timer(fn, grads=None):
        fn()  # compile / autotune outside the timing
        if smoke:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        from triton.testing import do_bench

        torch.cuda.synchronize()
        return float(do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grads, return_mode="median"))

    return timer


def host_us_per_call(fn, calls: int = 200) -> float:
    """Wall-clock microseconds per call of back-to-back calls (CPU launch overhead included)."""
    import torch

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def make_weight(out_f: int, in_f: int, n: int, m: int, dtype, dev, mask: str = "random", seed: int = 0) -> dict:
    """Masked dense weight and its compressed storage (as SparseLinear keeps it) on ``dev``."""
    import torch

    import transmask
    import transmask.kernels as tk
    from transmask import sparse

    g = torch.Generator(device="cpu").manual_seed(seed)
    W = torch.randn(out_f, in_f, generator=g)
    M = transmask.optimal_mask(W.abs().numpy(), n, m) if mask == "optimal" else random_transposable_mask(out_f, in_f, n, m, seed)
    Mt = torch.from_numpy(M)
    Wd = (W * Mt).to(dev, dtype).contiguous()
    c = sparse.compress(Wd, Mt.to(dev), n, m)
    valid_bits = None
    if n == 1:
        layout = sparse.compress_transposable(Wd.cpu(), M, n, m)
        valid = torch.as_tensor(np.asarray(layout.forward_columns) < c.groups * m)
        valid_bits = tk.valid_bitmask(c.indices, in_f, n, m, valid.to(dev))
    return {"dense": Wd, "mask": Mt.to(dev), "values": c.values.contiguous(), "indices": c.indices.contiguous(),
            "valid_bits": valid_bits, "shape": (out_f, in_f), "n": n, "m": m}


def _relerr(out, ref) -> float:
    scale = ref.abs().max().item() + 1e-6
    return (out.float() - ref).abs().max().item() / scale


def bench_shape(w: dict, tokens, dtype, dev, timer, smoke=False, deadline=None, progress=print,
                tol=None) -> list[dict]:
    """All rows for one weight: ops x tokens x methods (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    import transmask.kernels as tk
    from transmask.kernels import autograd as ag
    from transmask.kernels.semi_structured import SemiStructuredPair, hw_supported

    out_f, in_f = w["shape"]
    n, m = w["n"], w["m"]
    Wd, vals, idx, vbits = w["dense"], w["values"], w["indices"], w["valid_bits"]
    tol = tol or (2e-2 if dtype != torch.float32 else 1e-3)
    rows = []
    hw_ok = (not smoke) and hw_supported((out_f, in_f), dtype, n, m, dev)
    hw_pair, hw_err = None, None
    if (n, m) == (2, 4) and not smoke:
        row = {"shape": [out_f, in_f], "tokens": 0, "op": "build"}
        try:
            dense_from_c = tk.nm_decompress(vals, idx, in_f, n, m)
            row["expand_relerr"] = _relerr(dense_from_c, Wd.float())
            row["expand_ms"] = timer(lambda: tk.nm_decompress(vals, idx, in_f, n, m))
            if hw_ok:
                for name, fused in (("hw_fused", True), ("hw_two_calls", False)):
                    pair = SemiStructuredPair(dense_from_c, fused=fused)
                    row[f"{name}_backend"] = pair.backend
                    row[f"{name}_ms"] = timer(lambda fused=fused: SemiStructuredPair(dense_from_c, fused=fused))
                hw_pair = SemiStructuredPair(dense_from_c, fused=True)
            else:
                row["hw_error"] = "hardware 2:4 path not supported for this shape/dtype/device"
        except Exception as exc:  # keep going: the other methods do not need it
            hw_err = f"{type(exc).__name__}: {str(exc)[:300]}"
            row["hw_error"] = hw_err
            hw_pair = None
        rows.append(row)
        progress(f"    build: expand {row.get('expand_ms')} ms, fused hw {row.get('hw_fused_ms')} ms, "
                 f"two calls {row.get('hw_two_calls_ms')} ms {row.get('hw_error', '')}")

    for T in tokens:
        if deadline is not None and time.monotonic() > deadline:
            rows.append({"shape": [out_f, in_f], "tokens": T, "op": "all", "skipped": "time budget spent"})
            progress(f"    T={T}: skipped (time budget)")
            continue
        X = torch.randn(T, in_f, device=dev, dtype=dtype)
        dY = torch.randn(T, out_f, device=dev, dtype=dtype)
        Xf, dYf, Wf = X.float(), dY.float(), Wd.float()
        refs = {"fwd": Xf @ Wf.t(), "bwd": dYf @ Wf}
        gw = dYf.t() @ Xf
        refs["dw"] = tk.nm_compress_like(gw, idx, n, m, valid_bits=vbits, dtype=torch.float32)
        plan = tk.step_backends(T, dtype, n, m, hw_ok, on_gpu=not smoke)
        ours_fwd = {"triton": "triton", "hw 2:4": "hw", "dense": "expand", "cpu": "triton"}[plan["fwd"]]
        ours_dw = "triton" if plan["dw"] in ("triton", "cpu") else "expand"
        fns = {
            "fwd": {
                "dense": lambda X=X: F.linear(X, Wd),
                "triton": lambda X=X: tk.nm_matmul(X, vals, idx, in_f, n, m, method="triton"),
                "expand": lambda X=X: tk.nm_matmul(X, vals, idx, in_f, n, m, method="dense"),
                "hw": (lambda X=X: hw_pair.matmul(X)) if hw_pair is not None else None,
            },
            "bwd": {
                "dense": lambda dY=dY: dY @ Wd,
                "triton": lambda dY=dY: tk.nm_matmul_t(dY, vals, idx, in_f, n, m, method="triton"),
                "expand": lambda dY=dY: tk.nm_matmul_t(dY, vals, idx, in_f, n, m, method="dense"),
                "hw": (lambda dY=dY: hw_pair.matmul_t(dY)) if hw_pair is not None else None,
            },
            "dw": {
                "dense": lambda X=X, dY=dY: dY.t() @ X,
                "triton": lambda X=X, dY=dY: tk.nm_sddmm(dY, X, idx, in_f, n, m, valid_bits=vbits),
                "expand": lambda X=X, dY=dY: tk.nm_compress_like(dY.t() @ X, idx, n, m, valid_bits=vbits),
                "hw": None,
            },
        }
        if smoke:  # no Triton outside CUDA/interpreter: "triton" is the CPU fallback there
            for op in fns:
                fns[op]["expand"] = None
        trows = []
        for op in ("fwd", "bwd", "dw"):
            row = {"shape": [out_f, in_f], "tokens": T, "op": op,
                   "ours_backend": plan[op] if op != "dw" else plan["dw"]}
            ours = ours_fwd if op != "dw" else ours_dw
            for name in ("dense", "triton", "expand", "hw"):
                fn = fns[op][name]
                if fn is None:
                    row[f"{name}_ms"] = None
                    if name == "hw" and op != "dw" and hw_err:
                        row["hw_error"] = hw_err
                    continue
                try:
                    out = fn()
                    if not (op == "dw" and name == "dense"):  # dense dW is the full matrix: check the reference instead
                        err = _relerr(out, refs[op])
                        row[f"{name}_relerr"] = err
                        if err > tol:
                            raise AssertionError(f"{name} {op} differs from the dense product: max rel err {err:.3g}")
                    row[f"{name}_ms"] = timer(fn)
                except Exception as exc:
                    row[f"{name}_ms"] = None
                    row[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            row["ours"] = ours
            row["ours_ms"] = row.get(f"{ours}_ms")
            trows.append(row)
        # the full autograd step: forward + dX + dW (+ builds/gathers), dense vs ours
        row = {"shape": [out_f, in_f], "tokens": T, "op": "step", "ours_backend": f"{plan['fwd']} + dW {plan['dw']}",
               "ours": "ours"}
        g = torch.randn(T, out_f, device=dev, dtype=dtype)
        Wp = Wd.clone().requires_grad_()
        Xp = X.clone().requires_grad_()
        Vp = vals.clone().requires_grad_()

        def dense_step():
            F.linear(Xp, Wp).backward(g)

        def ours_step():
            ag.transposable_nm_linear(Xp, Vp, idx, in_f, n, m, valid_bits=vbits).backward(g)

        for name, fn, grads in (("dense", dense_step, [Xp, Wp]), ("ours", ours_step, [Xp, Vp])):
            try:
                Xp.grad = Wp.grad = Vp.grad = None
                fn()
                if name == "ours":
                    gf = g.float()
                    err_dx = _relerr(Xp.grad, gf @ Wf)
                    err_dv = _relerr(Vp.grad, tk.nm_compress_like(gf.t() @ Xf, idx, n, m, valid_bits=vbits,
                                                                  dtype=torch.float32))
                    row["ours_relerr"] = max(err_dx, err_dv)
                    if row["ours_relerr"] > tol:
                        raise AssertionError(f"ours step gradients differ from dense: max rel err {row['ours_relerr']:.3g}")
                row[f"{name}_ms"] = timer(fn, grads)
            except Exception as exc:
                row[f"{name}_ms"] = None
                row[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        trows.append(row)
        if T <= 32 and not smoke:
            try:  # decode latency includes the host: back-to-back calls, wall clock
                trows[0]["ours_host_us"] = host_us_per_call(fns["fwd"][ours_fwd])
                trows[0]["dense_host_us"] = host_us_per_call(fns["fwd"]["dense"])
            except Exception as exc:
                trows[0]["host_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        rows += trows
        for r in trows:
            for name in METHODS:
                t = r.get(f"{name}_ms")
                r[f"{name}_speedup"] = (r["dense_ms"] / t) if (t and r.get("dense_ms")) else None
            r["ours_vs_hw"] = (r["hw_ms"] / r["ours_ms"]) if (r.get("hw_ms") and r.get("ours_ms")) else None
            progress(_fmt_row(r))
        del X, dY, Xf, dYf, refs, gw, Wp, Xp, Vp, g, fns
        if not smoke:
            torch.cuda.empty_cache()
    return rows


def _f(v, w=8, p=3):
    return f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"


HEADER = (f"{'W':>11} {'T':>6} {'op':>5} {'dense':>8} {'ours':>8} {'triton':>8} {'expand':>8} {'hw':>8} "
          f"{'ours x':>7} {'hw x':>7}  ours runs")


def _fmt_row(r) -> str:
    if r["op"] in ("build", "all"):
        return f"{r['shape'][0]:>5}x{r['shape'][1]:<5} {r['op']}: {r.get('skipped', '')}"
    s = (f"{r['shape'][0]:>5}x{r['shape'][1]:<5} {r['tokens']:>6} {r['op']:>5} {_f(r.get('dense_ms'))} {_f(r.get('ours_ms'))} "
         f"{_f(r.get('triton_ms'))} {_f(r.get('expand_ms'))} {_f(r.get('hw_ms'))} {_f(r.get('ours_speedup'), 7, 2)} "
         f"{_f(r.get('hw_speedup'), 7, 2)}  {r.get('ours_backend', '')}")
    errs = [f"{k}: {v}" for k, v in r.items() if k.endswith("_error") and v]
    return s + ("\n" + "\n".join(f"{'':>14}{e}" for e in errs) if errs else "")


def markdown(rows, meta) -> str:
    """Markdown tables of ``rows`` (a section of the GPU report, or the whole bench file)."""
    def c(v, p=3):
        return f"{v:.{p}f}" if isinstance(v, (int, float)) else "-"

    lines = [f"{meta.get('timer', '')}; torch {meta.get('torch')}, triton {meta.get('triton')}, "
             f"{meta.get('dtype')} {meta.get('n')}:{meta.get('m')}. `x` = speed-up over dense cuBLAS (> 1 is faster); "
             "`ours` is what SparseLinear runs at that token count (backend in the last column).", "",
             "| W | T | op | dense ms | ours ms | triton ms | expand+cuBLAS ms | hw 2:4 ms | ours x | triton x | hw x | ours/hw | ours runs |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    builds = []
    for r in rows:
        if r["op"] == "build":
            builds.append(r)
            continue
        if r["op"] == "all":
            lines.append(f"| {r['shape'][0]}x{r['shape'][1]} | {r['tokens']} | - | skipped: {r.get('skipped')} |"
                         + " |" * 9)
            continue
        lines.append(f"| {r['shape'][0]}x{r['shape'][1]} | {r['tokens']} | {r['op']} | {c(r.get('dense_ms'))} | "
                     f"{c(r.get('ours_ms'))} | {c(r.get('triton_ms'))} | {c(r.get('expand_ms'))} | {c(r.get('hw_ms'))} | "
                     f"{c(r.get('ours_speedup'), 2)} | {c(r.get('triton_speedup'), 2)} | {c(r.get('hw_speedup'), 2)} | "
                     f"{c(r.get('ours_vs_hw'), 2)} | {r.get('ours_backend', '')} |")
    if builds:
        lines += ["", "Hardware 2:4 forms built from the compressed weight (per optimizer step in training):", "",
                  "| W | expand ms | fused W + W.T ms | two to_sparse_semi_structured ms | backend | error |",
                  "|---|---:|---:|---:|---|---|"]
        for r in builds:
            lines.append(f"| {r['shape'][0]}x{r['shape'][1]} | {c(r.get('expand_ms'))} | {c(r.get('hw_fused_ms'))} | "
                         f"{c(r.get('hw_two_calls_ms'))} | {r.get('hw_fused_backend', '-')} | {r.get('hw_error', '')} |")
    errs = [(r, k, v) for r in rows for k, v in r.items() if k.endswith("_error") and v]
    if errs:
        lines += ["", "Errors (method not timed):", ""]
        lines += [f"- {r['shape'][0]}x{r['shape'][1]} T={r['tokens']} {r['op']} {k[:-6]}: {v}" for r, k, v in errs]
    return "\n".join(lines) + "\n"


def environment(smoke: bool, dtype_name: str, n: int, m: int, warmup: int, rep: int) -> dict:
    import torch
    import triton

    import transmask

    gpu = "cpu-smoke" if smoke else torch.cuda.get_device_name()
    return {
        "device": gpu,
        "capability": [0, 0] if smoke else list(torch.cuda.get_device_capability()),
        "sms": 0 if smoke else torch.cuda.get_device_properties(0).multi_processor_count,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cusparselt": (None if smoke else getattr(torch.backends, "cusparselt", None) and torch.backends.cusparselt.version()),
        "transmask": transmask.__version__,
        "dtype": dtype_name,
        "n": n,
        "m": m,
        "timer": ("CPU smoke run: one wall-clock call, meaningless" if smoke else
                  f"triton.testing.do_bench median (L2 flushed before every call), warmup={warmup} ms, rep={rep} ms"),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    }


def run(shapes, tokens, dtype_name="fp16", n=2, m=4, mask="random", warmup=25, rep=100, smoke=False,
        deadline=None, progress=print, on_rows=None) -> tuple[dict, list[dict]]:
    """Time every shape (see the module docstring); ``on_rows(rows)`` is called after each shape (partial saves)."""
    import torch

    dtype = getattr(torch, DTYPES[dtype_name])
    dev = torch.device("cpu") if smoke else torch.device("cuda")
    meta = environment(smoke, dtype_name, n, m, warmup, rep)
    timer = make_timer(smoke, warmup, rep)
    rows = []
    progress(HEADER)
    for shape in shapes:
        out_f, in_f = map(int, shape.lower().split("x"))
        try:
            w = make_weight(out_f, in_f, n, m, dtype, dev, mask)
            rows += bench_shape(w, tokens, dtype, dev, timer, smoke=smoke, deadline=deadline, progress=progress)
        except Exception as exc:  # one shape failing must not lose the others
            rows.append({"shape": [out_f, in_f], "tokens": 0, "op": "all", "skipped": f"{type(exc).__name__}: {exc}"[:400]})
            progress(f"  {shape}: FAILED {type(exc).__name__}: {exc}")
        finally:
            w = None
            if not smoke:
                torch.cuda.empty_cache()
        if on_rows:
            on_rows(meta, rows)
    return meta, rows


def save(out: Path, meta: dict, rows: list[dict]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    slug = device_slug(meta["device"])
    jpath = out / f"matmul_{slug}.json"
    jpath.write_text(json.dumps({"meta": meta, "results": rows}, indent=1, default=str) + "\n")
    title = f"# N:M sparse Linear products on {meta['device']}, {meta['dtype']}, {meta['n']}:{meta['m']}\n\n"
    (out / f"matmul_{slug}.md").write_text(title + markdown(rows, meta))
    return jpath


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench/matmul.py: torch is not installed (pip install 'transmask[triton]'); nothing to time.")
        return 0
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("bench/matmul.py: no CUDA GPU available (torch.cuda.is_available() is False); "
              "the kernels are timed only on a GPU. Skipping, exit 0.")
        return 0
    import transmask.kernels as tk

    if tk.INTERPRET and not smoke:
        print("bench/matmul.py: TRITON_INTERPRET=1 is set; unset it to time the compiled kernels. Skipping.")
        return 0
    shapes, tokens = (QUICK if args.quick else (args.shapes, args.tokens))
    dtype_name = args.dtype
    if smoke:
        shapes, tokens, dtype_name = ["40x24"], [1, 5], "fp32"
    meta, rows = run(shapes, tokens, dtype_name, args.n, args.m, args.mask, args.warmup, args.rep, smoke=smoke)
    jpath = save(args.out, meta, rows)
    print(f"saved {jpath} and {jpath.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
