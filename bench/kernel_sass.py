#!/usr/bin/env python
"""Compiled-code statistics of the N:M kernels, for the specialisations the runtime would launch (no GPU needed).

    python bench/kernel_sass.py                  # 2:4 fp16, 4096x4096 and 4096x11008, T in 1 16 128 4096, sm_90 + sm_80
    python bench/kernel_sass.py --quick          # 4096x11008, T=16, sm_90 only (~30 s)
    python bench/kernel_sass.py --all-configs    # + every large-token config (method="triton") and 4:8 / 8:16 fp16

For every weight shape ``W: (out, in)`` and token count ``T`` it asks the runtime which
backend runs each product of a training step (``transmask.kernels.compiled.runtime_plan``:
forward ``x @ W.T``, backward ``dy @ W``, weight gradient ``dW`` at the kept entries, and
the conversions), rebuilds every Triton specialisation those launches would compile
(Triton's own binder on CPU stand-ins of the real arguments, the autotuner's pruned
configurations, the split-K factor for 132 SMs), compiles it for ``sm_90`` (H100/H200) and
``sm_80`` (A100) and reports, from ``ptxas -v`` and the SASS (``nvdisasm`` from the triton
wheel):

``regs``, ``spills`` (bytes stored + loaded), ``smem`` (KiB per program)
``loop``  SASS instructions in the main-loop body (one iteration, one warp)
``w-i/w`` warp instructions per dense weight the loop expands (``loop x warps / (BLOCK_R x BLOCK_K)``);
          the target for the few-token kernel is <= 0.3
``smem B/w`` shared-memory bytes moved per dense weight in the loop (cp.async writes, ld/st.shared,
          ldmatrix, wgmma operand reads)

Writes ``<out>/kernel_sass.json`` and ``.md`` (default ``bench/results``; ``--quick`` writes to
a temporary folder unless ``--out`` is given). Timing on a GPU is ``bench/gpu_check.py``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHAPES = ["4096x4096", "4096x11008"]
TOKENS = [1, 16, 128, 4096]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=SHAPES)
    p.add_argument("--tokens", nargs="+", type=int, default=TOKENS)
    p.add_argument("--arch", nargs="+", type=int, default=[90, 80])
    p.add_argument("--all-configs", action="store_true",
                   help="also compile the large-token matmul configs (method='triton') and 4:8, 8:16 fp16")
    p.add_argument("--quick", action="store_true", help="4096x11008, T=16, sm_90 only")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def collect(shapes, tokens, archs, formats, extra_large=False, progress=print) -> list[dict]:
    """Compile and measure every distinct specialisation; one row per (shape, T, op, config, arch)."""
    import torch

    from transmask.kernels import compiled as C

    rows, seen = [], {}
    for arch in archs:
        for dtype_name, n, m in formats:
            dtype = getattr(torch, dtype_name)
            for shape in shapes:
                R, K = map(int, shape.lower().split("x"))
                for T in tokens:
                    plan = C.runtime_plan(R, K, T, dtype, n, m)
                    ops = [(op, be) for op, be in plan.items() if op != "convert" and be == "triton"]
                    ops += [(op, "triton") for op in plan["convert"]]
                    if extra_large and T > 32:
                        ops += [("fwd", "triton (method='triton')"), ("bwd", "triton (method='triton')")]
                    for op, backend in ops:
                        for spec in C.runtime_specialisations(R, K, T, dtype, n, m, op=op, arch=arch):
                            key = (arch, spec.kernel, repr(sorted(spec.constexprs.items())), repr(sorted(spec.attrs.items())),
                                   repr(sorted(spec.signature.items())), spec.num_warps, spec.num_stages)
                            if key not in seen:
                                t0 = time.perf_counter()
                                ck = C.compile_specialisation(spec, arch)
                                seen[key] = C.code_stats(ck, arch, spec.weights_per_iter, spec.num_warps)
                                progress(f"  compiled {spec.kernel} {spec.name} sm_{arch} ({time.perf_counter() - t0:.1f} s)")
                            st = seen[key]
                            rows.append({
                                "arch": f"sm_{arch}", "dtype": dtype_name, "n": n, "m": m, "shape": [R, K], "tokens": T,
                                "op": op, "backend": backend, "kernel": spec.kernel, "config": spec.name,
                                "split": spec.split, "registers": st["registers"],
                                "spill_bytes": (st["spill_stores"] or 0) + (st["spill_loads"] or 0),
                                "stack_bytes": st["stack_bytes"], "local_memory_ops": st["local_memory_ops"],
                                "shared_kib": round(st["shared_bytes"] / 1024, 1),
                                "loop_instructions": st.get("loop_instructions"),
                                "warp_instr_per_weight": st.get("warp_instr_per_weight") if st.get("loop_instructions") else None,
                                "smem_bytes_per_weight": st.get("smem_bytes_per_weight") if st.get("loop_instructions") else None,
                                "loop_branches": st.get("branches"),
                                "kernel_instructions": st["kernel_instructions"],
                                "top_loop_opcodes": st.get("opcodes"),
                            })
                    for op, backend in plan.items():
                        if op != "convert" and backend != "triton":
                            rows.append({"arch": f"sm_{arch}", "dtype": dtype_name, "n": n, "m": m, "shape": [R, K],
                                         "tokens": T, "op": op, "backend": backend, "kernel": "-", "config": "-"})
    return rows


def to_markdown(rows, meta) -> str:
    def f(v, p=3):
        return "-" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))

    lines = [f"# N:M kernels: compiled-code statistics ({meta['date'][:10]}, triton {meta['triton']})", "",
             "Specialisations the runtime would launch for one training step of a SparseLinear "
             "(`transmask.kernels.compiled`), compiled for the target without a GPU. `w-i/w`: warp "
             "instructions per dense weight in the main loop (target <= 0.3 for the few-token kernel); "
             "`smem B/w`: shared-memory bytes per dense weight in the loop. Backends other than triton "
             "(hw 2:4 = PyTorch's sparse tensor cores, dense = cuBLAS) have no row of their own here. "
             "Timings: bench/gpu_check.py (GPU).", "",
             "| arch | format | W | T | op | kernel | config | split | regs | spills B | smem KiB | loop | w-i/w | smem B/w |",
             "|---|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["kernel"] == "-":
            continue
        lines.append(f"| {r['arch']} | {r['dtype']} {r['n']}:{r['m']} | {r['shape'][0]}x{r['shape'][1]} | {r['tokens']} | "
                     f"{r['op']} | {r['kernel']} | {r['config']} | {r['split']} | {r['registers']} | {r['spill_bytes']} | "
                     f"{f(r['shared_kib'], 1)} | {f(r['loop_instructions'])} | {f(r['warp_instr_per_weight'])} | "
                     f"{f(r['smem_bytes_per_weight'], 2)} |")
    others = sorted({(r["op"], r["backend"], r["tokens"]) for r in rows if r["kernel"] == "-"})
    if others:
        lines += ["", "Products not on a Triton kernel: " + "; ".join(f"T={t} {op}: {be}" for op, be, t in others) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    try:
        import torch
        import triton
    except ImportError:
        print("bench/kernel_sass.py: needs torch and triton (pip install 'transmask[triton]'); nothing to do.")
        return 0
    from transmask.kernels import compiled as C

    if C.SASS_TOOLS["nvdisasm"] is None:
        print("bench/kernel_sass.py: nvdisasm is not in this triton wheel; cannot read SASS. Skipping.")
        return 0
    shapes, tokens, archs = args.shapes, args.tokens, args.arch
    formats = [("float16", 2, 4)]
    if args.quick:
        shapes, tokens, archs = ["4096x11008"], [16], [90]
    if args.all_configs:
        formats += [("float16", 4, 8), ("float16", 8, 16)]
    out = args.out or (Path(tempfile.mkdtemp(prefix="kernel_sass_")) if args.quick else ROOT / "bench" / "results")
    t0 = time.perf_counter()
    print(f"# compiling for {', '.join(f'sm_{a}' for a in archs)}: {', '.join(shapes)}, T in {tokens}")
    rows = collect(shapes, tokens, archs, formats, extra_large=args.all_configs)
    meta = {"triton": triton.__version__, "torch": torch.__version__, "host": platform.node(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - t0, 1), "sms_assumed": 132,
            "note": "SASS from nvdisasm of the cubin triton.compile produced; registers/spills from ptxas -v "
                    "with triton's flags"}
    md = to_markdown(rows, meta)
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernel_sass.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "kernel_sass.md").write_text(md)
    bad = [r for r in rows if r.get("spill_bytes")]
    print(f"saved {out / 'kernel_sass.json'} and .md ({meta['seconds']} s); "
          + (f"{len(bad)} specialisation(s) SPILL" if bad else "no spills"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
