#!/usr/bin/env python
"""Bench: N:M sparse matmul from one transposable mask vs dense cuBLAS and PyTorch's hardware 2:4 path.

    python bench/matmul.py                 # full run on a CUDA GPU (~5-10 min incl. autotuning)
    python bench/matmul.py --quick         # two token counts, one shape
    python bench/matmul.py --tokens 1 16 4096 --shapes 4096x4096

Without CUDA it prints why and exits 0 (nothing is timed on CPU: the kernels'
CPU path is a decompress-and-matmul fallback, and the interpreter is a test tool).

What is timed (``triton.testing.do_bench``, median of ``--rep`` ms after
``--warmup`` ms, CUDA events, L2 not flushed), for every weight shape
``W: (out_features, in_features)`` and token count ``T``:

``fwd``  ``Y = X @ W.T``,  ``X: (T, in_features)``
``bwd``  ``dX = dY @ W``,  ``dY: (T, out_features)`` (the product that passes the
         error on; needs ``W.T`` to be N:M, which the transposable mask gives)
``fwd+bwd``  sum of the two (the weight-gradient GEMM ``dY.T @ X`` is dense for
         every method and is not included)

by three methods:

``dense``   ``torch.matmul`` on the masked dense weight (cuBLAS);
``ours``    ``transmask.kernels.nm_matmul`` on the forward / backward compressed
            forms (Triton, autotuned; autotuning runs before timing);
``2:4-hw``  ``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt, or CUTLASS
            when torch was built without it) of ``W`` for fwd and of ``W.T`` for
            bwd, used through ``F.linear``; only for 2:4 and fp16/bf16. Its
            compression is done once, outside the timing, like ours.

Ratios are ``t_dense / t_method`` (> 1 is faster than dense). Every method's
output is checked against dense before timing. Results: printed table,
``<out>/matmul_<device>.json`` and ``<out>/matmul_<device>.md``.

The mask is a random transposable one (cyclic pattern with a random shift per
tile; the timing of every method is independent of *which* valid mask is used);
``--mask optimal`` uses ``transmask.optimal_mask`` instead.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_SHAPES = ["4096x4096", "4096x11008", "11008x4096"]  # (out_features x in_features), LLaMA-7B-like
DEFAULT_TOKENS = [1, 16, 128, 1024, 4096, 16384]
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


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
    import time

    import torch.nn.functional as F
    import triton

    import transmask
    import transmask.kernels as tk
    from transmask import sparse

    if tk.INTERPRET and not smoke:
        print("bench/matmul.py: TRITON_INTERPRET=1 is set; unset it to time the compiled kernels. Skipping.")
        return 0
    shapes = args.shapes[:1] if args.quick else args.shapes
    tokens = [16, 4096] if args.quick else args.tokens
    n, m = args.n, args.m
    dtype = getattr(torch, DTYPES[args.dtype])
    if smoke:
        shapes, tokens, dtype, args.dtype = ["40x24"], [1, 5], torch.float32, "fp32"
        dev, gpu = torch.device("cpu"), "cpu-smoke"
    else:
        dev = torch.device("cuda")
        gpu = torch.cuda.get_device_name(dev)
    hw_ok = (n, m) == (2, 4) and args.dtype in ("fp16", "bf16") and not smoke
    try:
        from torch.sparse import to_sparse_semi_structured
    except ImportError:  # pragma: no cover - very old torch
        hw_ok = False

    def timed(fn):
        fn()  # compile / autotune outside the timing
        if smoke:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        from triton.testing import do_bench

        torch.cuda.synchronize()
        return float(do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median"))

    rows = []
    meta = {
        "device": gpu,
        "capability": [0, 0] if smoke else list(torch.cuda.get_device_capability(dev)),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "transmask": transmask.__version__,
        "dtype": args.dtype,
        "n": n,
        "m": m,
        "mask": args.mask,
        "timer": ("CPU smoke run: one wall-clock call, meaningless" if smoke else
                  f"triton.testing.do_bench median, warmup={args.warmup} ms, rep={args.rep} ms"),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    }
    print(f"# {gpu} (sm_{meta['capability'][0]}{meta['capability'][1]}), torch {torch.__version__}, "
          f"triton {triton.__version__}, {args.dtype}, {n}:{m}")
    hdr = f"{'shape':>12} {'T':>6} {'op':>7} {'dense ms':>9} {'ours ms':>9} {'2:4-hw ms':>9} {'ours x':>7} {'hw x':>7}"
    print(hdr)
    for shape in shapes:
        out_f, in_f = map(int, shape.lower().split("x"))
        g = torch.Generator(device="cpu").manual_seed(0)
        W = torch.randn(out_f, in_f, generator=g).to(dev, dtype)
        if args.mask == "optimal":
            M = transmask.optimal_mask(W.float().abs().cpu().numpy(), n, m)
        else:
            M = random_transposable_mask(out_f, in_f, n, m)
        Mt = torch.from_numpy(M).to(dev)
        Wd = (W * Mt).contiguous()
        WdT = Wd.t().contiguous()
        layout = sparse.compress_transposable(Wd, Mt, n, m)
        fwd_c, bwd_c = layout.forward, layout.backward
        hw = {}
        if hw_ok:
            try:
                hw["fwd"] = to_sparse_semi_structured(Wd)
                hw["bwd"] = to_sparse_semi_structured(WdT)  # possible only because W.T is 2:4 too
                meta["hw_backend"] = type(hw["fwd"]).__name__
            except Exception as exc:  # no cuSPARSELt/CUTLASS support on this GPU or build
                meta["hw_error"] = f"{type(exc).__name__}: {exc}"
                hw = {}
        for T in tokens:
            X = torch.randn(T, in_f, device=dev, dtype=dtype)
            dY = torch.randn(T, out_f, device=dev, dtype=dtype)
            ops = {
                "fwd": dict(
                    dense=lambda X=X: torch.matmul(X, Wd.t()),
                    ours=lambda X=X: tk.nm_matmul(X, fwd_c.values, fwd_c.indices, in_f, n, m),
                    hw=(lambda X=X: F.linear(X, hw["fwd"])) if "fwd" in hw else None,
                ),
                "bwd": dict(
                    dense=lambda dY=dY: torch.matmul(dY, Wd),
                    ours=lambda dY=dY: tk.nm_matmul(dY, bwd_c.values, bwd_c.indices, out_f, n, m),
                    hw=(lambda dY=dY: F.linear(dY, hw["bwd"])) if "bwd" in hw else None,
                ),
            }
            res = {}
            for op, fns in ops.items():
                ref = fns["dense"]().float()
                scale = ref.abs().max().item() + 1e-6
                r = {"dense_ms": timed(fns["dense"])}
                for name in ("ours", "hw"):
                    fn = fns[name]
                    if fn is None:
                        r[f"{name}_ms"] = None
                        continue
                    try:
                        err = (fn().float() - ref).abs().max().item() / scale
                        r[f"{name}_relerr"] = err
                        if err > (2e-2 if dtype != torch.float32 else 1e-3):
                            raise AssertionError(f"{name} {op} differs from dense: max rel err {err:.3g}")
                        r[f"{name}_ms"] = timed(fn)
                    except Exception as exc:
                        r[f"{name}_ms"] = None
                        r[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                res[op] = r
            res["fwd+bwd"] = {
                k: (res["fwd"][k] + res["bwd"][k]) if res["fwd"].get(k) is not None and res["bwd"].get(k) is not None else None
                for k in ("dense_ms", "ours_ms", "hw_ms")
            }
            for op, r in res.items():
                for name in ("ours", "hw"):
                    t = r.get(f"{name}_ms")
                    r[f"{name}_speedup"] = (r["dense_ms"] / t) if t else None
                row = {"shape": [out_f, in_f], "tokens": T, "op": op, **r}
                if op != "fwd+bwd":
                    flops = 2.0 * T * out_f * in_f
                    row["dense_tflops"] = flops / r["dense_ms"] / 1e9
                    row["ours_weight_bytes"] = fwd_c.nbytes if op == "fwd" else bwd_c.nbytes
                rows.append(row)

                def f(v, w=9, p=3):
                    return f"{v:>{w}.{p}f}" if v is not None else f"{'-':>{w}}"

                print(f"{shape:>12} {T:>6} {op:>7} {f(r['dense_ms'])} {f(r['ours_ms'])} {f(r['hw_ms'])} "
                      f"{f(r['ours_speedup'], 7, 2)} {f(r['hw_speedup'], 7, 2)}")
                for key in ("ours_error", "hw_error"):
                    if r.get(key):
                        print(f"{'':>12} {key}: {r[key]}")
            del X, dY
        del W, Wd, WdT, layout, hw
        torch.cuda.empty_cache()

    args.out.mkdir(parents=True, exist_ok=True)
    slug = device_slug(gpu)
    jpath = args.out / f"matmul_{slug}.json"
    jpath.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    lines = [f"# N:M matmul on {gpu}, {args.dtype}, {n}:{m}", "", f"{meta['timer']}; torch {torch.__version__}, "
             f"triton {triton.__version__}. x = speedup over dense cuBLAS (> 1 is faster).", "",
             "| W shape | tokens | op | dense ms | ours ms | 2:4-hw ms | ours x | 2:4-hw x |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        def c(v, p=3):
            return f"{v:.{p}f}" if v is not None else "-"
        lines.append(f"| {r['shape'][0]}x{r['shape'][1]} | {r['tokens']} | {r['op']} | {c(r['dense_ms'])} | "
                     f"{c(r['ours_ms'])} | {c(r['hw_ms'])} | {c(r['ours_speedup'], 2)} | {c(r['hw_speedup'], 2)} |")
    (args.out / f"matmul_{slug}.md").write_text("\n".join(lines) + "\n")
    print(f"saved {jpath} and {jpath.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
