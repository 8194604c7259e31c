#!/usr/bin/env python
"""GPU timings of issue 19: the exact device solver at 8192^2 against its peers, with exactness checks.

    python bench/_gpu_solver_check.py            # 8192 x 8192 float32, 2:4 4:8 8:16 16:32 (~85 s)
    python bench/_gpu_solver_check.py --quick    # 4096 x 4096, 2:4 and 8:16, no variants (~25 s)
    python bench/_gpu_solver_check.py --out DIR  # also write DIR/gpu_solver.{json,md}
    TRITON_INTERPRET=1 python bench/_gpu_solver_check.py --rehearse-on-cpu   # every step, tiny, no GPU

Without CUDA it prints one line and exits 0. ``bench/gpu_check.py`` imports :func:`run` and adds
its markdown section to the GPU report.

What one run measures, per n:m, on the same random Gaussian matrix (seed 0):

* **GPU exact**: :func:`transmask.solvers.gpu.optimal_mask_torch` (validation + kernels + status
  check) and the kernels alone, median and minimum of ``repeats`` calls after a warm-up call whose
  time (Triton compile + first run) is reported separately;
* **exactness**: per tile, the GPU mask's kept magnitude against the CPU solver's (relative
  tolerance ``4 m eps32`` of the tile's total magnitude), and the transposable exactly-n counts;
* **CPU exact** on all host cores (:func:`transmask.optimal_mask`, Numba, warm cache), plus the
  device-to-host and host-to-device copies that solving on the host would add during training;
* **torch top-k**: the plain row-wise N:M mask (``topk`` per group of m and a scatter), not transposable;
* **entropic OT (TSENOR-style)**: :mod:`bench.peers.sinkhorn_ot_torch` on the GPU (50 Dykstra
  sweeps + greedy rounding), with its kept magnitude as a fraction of the optimum;
* float16 / bfloat16 / ``keep="at_most"`` inputs at 8:16, and while time remains **variants** of
  the kernels (launch configurations, dual-ascent rounds), each checked exact.

Every measurement is wrapped: an error is recorded in the result (and printed) and the run goes
on; the stages run most wanted first within a time budget, and ``on_partial`` receives the
results after every stage, so a caller that stops the run keeps what was measured.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PATTERNS = ((2, 4), (4, 8), (8, 16), (16, 32))
TARGETS_S = {"2:4": 0.02, "8:16": 0.05}  # issue 19 (H100/H200), exact, 8192^2
# variants tried by the sweep, most wanted first (each costs a Triton compile): launch configurations
# (tiles per program, warps) of the kernels and the number of dual-ascent rounds; defaults are in
# transmask.solvers.gpu._kernels (FLOW_CONFIGS, PATTERN_CONFIG, DUAL_ROUNDS)
SWEEP = [
    ((8, 16), {"flow": (1, 2)}), ((8, 16), {"rounds": 2}), ((8, 16), {"flow": (2, 2)}), ((8, 16), {"rounds": 4}),
    ((2, 4), {"pattern": (128, 4)}), ((2, 4), {"pattern": (32, 2)}),
    ((4, 8), {"flow": (1, 1)}), ((4, 8), {"rounds": 2}), ((4, 8), {"flow": (4, 2)}),
    ((16, 32), {"flow": (1, 8)}), ((16, 32), {"rounds": 2}), ((16, 32), {"flow": (1, 2)}), ((16, 32), {"rounds": 4}),
]


def _log(msg: str) -> None:
    print(f"[gpu-solver] {msg}", flush=True)


def _timed(fn, repeats: int, sync=lambda: None) -> dict:
    """Median and minimum wall time of ``fn()``, with ``sync()`` (the device's) before and after each call."""
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


class _Recorder:
    """Runs measurements, keeps what succeeded and records what failed."""

    def __init__(self):
        self.errors: list[dict] = []

    def __call__(self, what: str, fn, default=None):
        t0 = time.perf_counter()
        try:
            out = fn()
            _log(f"{what}: done in {time.perf_counter() - t0:.1f} s")
            return out
        except Exception as exc:  # noqa: BLE001 - a GPU run must go on whatever one measurement does
            _log(f"{what}: FAILED {type(exc).__name__}: {exc}")
            self.errors.append({"what": what, "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc()[-3000:]})
            return default


def _tile_view(X, m: int):
    R, C = X.shape
    return X.reshape(R // m, m, C // m, m)


def exactness(W, gpu_mask, cpu_mask, n: int, m: int, torch) -> dict:
    """Per-tile kept magnitude of the GPU mask against the CPU optimum, and the exactly-n counts."""
    A = W.abs().double()
    got = _tile_view(A * gpu_mask, m).sum(dim=(1, 3))
    best = _tile_view(A * cpu_mask, m).sum(dim=(1, 3))
    total = _tile_view(A, m).sum(dim=(1, 3))
    tol = 4 * m * float(torch.finfo(torch.float32).eps) * total
    rel = (best - got) / total.clamp_min(torch.finfo(torch.float64).tiny)
    t = _tile_view(gpu_mask.to(torch.int32), m)
    counts_ok = bool(((t.sum(dim=3) == n).all() & (t.sum(dim=1) == n).all()).item())
    return {
        "tiles": int(got.numel()),
        "tiles_below_optimum": int((got < best - tol).sum().item()),
        "tiles_above_optimum": int((got > best + tol).sum().item()),
        "max_rel_deficit": float(rel.max().item()),
        "max_rel_excess": float((-rel).max().item()),
        "tiles_differing_masks": int((_tile_view(gpu_mask != cpu_mask, m).any(dim=3).any(dim=1)).sum().item()),
        "transposable_exactly_n": counts_ok,
        "exact": counts_ok and int((got < best - tol).sum().item()) == 0,
    }


def _topk_rowwise(W, n: int, m: int, torch):
    R, C = W.shape
    groups = W.abs().reshape(R, C // m, m)
    idx = groups.topk(n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(R, C)


def _warm_numba_in_background(patterns) -> subprocess.Popen | None:
    """Compile the CPU solver's kernels (Numba cache) in another process while the GPU runs."""
    code = ("import numpy as np, transmask as tm\n"
            "A = np.random.default_rng(0).standard_normal((96, 96)).astype(np.float32)\n"
            f"for n, m in {list(patterns)!r}:\n"
            "    tm.optimal_mask(A, n, m)\n")
    try:
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    except OSError:
        return None


def _markdown(res: dict) -> str:
    lines = [f"### Exact transposable masks on the GPU (issue 19)", "",
             f"{res.get('device', '?')}; matrix {res['size']}x{res['size']} float32 (Gaussian, seed 0); "
             f"torch {res.get('torch', '?')}, triton {res.get('triton', '?')}; host: {res.get('host_cpu', '?')} "
             f"({res.get('host_threads', '?')} threads). Median of {res.get('repeats', '?')} calls after a warm-up; "
             "exact = every tile keeps the CPU solver's optimum (tolerance 4 m eps32 of the tile's magnitude).", "",
             "| n:m | GPU exact (s) | target (s) | kernels only (s) | first call (s) | CPU exact, all cores (s) | "
             "host round trip (s) | torch top-k row-wise (s) | entropic OT GPU (s) | OT kept / optimum | exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x, fmt="{:.4f}"):
        return "-" if x is None else fmt.format(x)

    for row in res["rows"]:
        key = row["pattern"]
        tgt = TARGETS_S.get(key)
        gpu = row.get("gpu", {}).get("median_s")
        met = "" if tgt is None or gpu is None else (" (met)" if gpu <= tgt else f" (not met, {gpu / tgt:.1f}x)")
        ex = row.get("exactness") or {}
        exact = "-" if not ex else ("yes" if ex.get("exact") else
                                    f"NO ({ex.get('tiles_below_optimum')} tiles below, counts ok: {ex.get('transposable_exactly_n')})")
        lines.append("| " + " | ".join([
            key, f(gpu), (f(tgt, "{:.2f}") + met) if tgt else "-",
            f(row.get("kernels", {}).get("median_s")), f(row.get("first_call_s"), "{:.2f}"),
            f(row.get("cpu", {}).get("median_s")), f(row.get("round_trip_s")),
            f(row.get("topk", {}).get("median_s")), f(row.get("ot", {}).get("median_s")),
            f(row.get("ot_kept_fraction"), "{:.4f}"), exact]) + " |")
    sweeps = [(r["pattern"], r["sweep"]) for r in res["rows"] if r.get("sweep")]
    if sweeps:
        lines += ["", "Variants (kernels only, median s; flow/pattern = (tiles per program, warps), rounds = dual-ascent "
                  "rounds): " + "; ".join(f"{p}: " + ", ".join(f"{k} {v:.4f}" for k, v in s.items() if v is not None)
                                          for p, s in sweeps)]
    extra = res.get("extra") or {}
    if extra:
        lines += ["", f"Other inputs at {res.get('extra_pattern', '8:16')} (optimal_mask_torch, median s): " +
                  ", ".join(f"{k} {v['median_s']:.4f}" for k, v in extra.items() if isinstance(v, dict))]
    if res.get("errors"):
        lines += ["", "Errors: " + "; ".join(f"{e['what']}: {e['error']}" for e in res["errors"])]
    return "\n".join(lines) + "\n"


def run(quick: bool = False, size: int | None = None, budget_s: float | None = None, sweep: bool | None = None,
        device: str = "cuda", repeats: int | None = None, patterns=None, deadline: float | None = None,
        on_partial=None) -> dict:
    """Time the device solver against its peers; returns the numbers and a markdown section.

    Stages, most wanted first, each skipped once the time is up: (1) the GPU solver per n:m
    (first call, timings); (2) exactness against the CPU solver and its timing on all cores (its
    Numba kernels compile in a background process from the start); (3) torch top-k and the
    entropic-OT peer; (4) float16/bfloat16/at_most inputs; (5) the variant sweep.

    Parameters
    ----------
    quick : bool
        4096^2, 2:4 and 8:16 only, 3 repeats, no sweep (about 30 s); default 8192^2, all four
        patterns, 10 repeats, sweep while time remains.
    size : int, optional
        Matrix side (overrides ``quick``'s choice); a multiple of every m.
    budget_s : float, optional
        Seconds this run may take (default 25 with ``quick``, else 85); ``deadline`` wins if sooner.
    sweep : bool, optional
        Try variants (launch configurations, dual-ascent rounds) while time remains (default: not ``quick``).
    device : str
        ``"cuda"``; ``"cpu"`` only to rehearse the script without a GPU (tests: tiny sizes with
        ``TRITON_INTERPRET=1``, so that the kernels run in Triton's interpreter).
    repeats : int, optional
        Timed calls per measurement (default 3 with ``quick``, else 10).
    patterns : sequence of (n, m), optional
        Default 2:4, 4:8, 8:16, 16:32 (2:4 and 8:16 with ``quick``).
    deadline : float, optional
        ``time.monotonic()`` value by which the run must have returned (e.g. a caller's time slice).
    on_partial : callable, optional
        Called with the result dict (markdown included) after every stage, so that a caller that
        may be stopped keeps what was measured.

    Returns
    -------
    dict
        ``{"skipped": reason}`` without CUDA; otherwise the measurements (``rows``, one per n:m),
        ``errors`` and ``markdown``.
    """
    t_start = time.monotonic()
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed", "markdown": ""}
    if device == "cuda" and not torch.cuda.is_available():
        return {"skipped": "no CUDA device", "markdown": ""}
    rec = _Recorder()
    size = size or (4096 if quick else 8192)
    repeats = repeats or (3 if quick else 10)
    sweep = (not quick) if sweep is None else sweep
    patterns = tuple(tuple(p) for p in (patterns or (((2, 4), (8, 16)) if quick else PATTERNS)))
    end = t_start + (budget_s if budget_s is not None else (25.0 if quick else 85.0))
    end = min(end, deadline) if deadline is not None else end

    def time_left(what: str, need: float = 2.0) -> bool:
        if time.monotonic() + need <= end:
            return True
        _log(f"time is up: {what} skipped")
        res.setdefault("skipped_parts", []).append(what)
        return False

    def publish():
        res["elapsed_s"] = time.monotonic() - t_start
        res["markdown"] = _markdown(res)
        if on_partial is not None:
            rec("partial save", lambda: on_partial(res))

    numba_proc = _warm_numba_in_background(patterns)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    import numba
    import triton

    import transmask as tm
    from bench._machine import cpu_model
    from bench.peers.sinkhorn_ot_torch import sinkhorn_mask_torch
    from transmask.solvers.gpu import _kernels, optimal_mask_torch

    res: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "CPU (rehearsal)", "size": size,
        "repeats": repeats, "torch": torch.__version__, "triton": triton.__version__, "host_cpu": cpu_model(),
        "host_threads": numba.config.NUMBA_NUM_THREADS, "rows": [], "errors": rec.errors, "extra": {},
    }
    _log(f"{res['device']}, {size}x{size} float32, patterns {patterns}, repeats {repeats}, sweep {sweep}, "
         f"{end - t_start:.0f} s")
    gen = torch.Generator(device=device).manual_seed(0)
    W = torch.randn((size, size), device=device, dtype=torch.float32, generator=gen)
    masks: dict = {}
    rows = {p: {"pattern": f"{p[0]}:{p[1]}"} for p in patterns}
    res["rows"] = list(rows.values())

    # 1. the GPU solver
    for (n, m), row in rows.items():
        key = row["pattern"]
        if not time_left(f"{key} GPU exact", 5.0):
            break

        def first(n=n, m=m):
            sync()
            t0 = time.perf_counter()
            masks[(n, m)] = optimal_mask_torch(W, n, m)
            sync()
            return time.perf_counter() - t0

        row["first_call_s"] = rec(f"{key} GPU exact first call (compile + run)", first)
        if (n, m) not in masks:
            continue
        row["gpu"] = rec(f"{key} GPU exact", lambda n=n, m=m: _timed(lambda: optimal_mask_torch(W, n, m), repeats, sync))
        row["kernels"] = rec(f"{key} GPU kernels only",
                             lambda n=n, m=m: _timed(lambda: _kernels.solve(W, n, m, "exactly"), repeats, sync))
        _log(f"{key}: GPU exact {row.get('gpu')}, kernels {row.get('kernels')}")
    publish()

    # 2. the CPU solver on all host cores (its compile ran in the background), and exactness
    if numba_proc is not None:
        rec("CPU solver compile (background process)", lambda: numba_proc.communicate(timeout=min(max(end - time.monotonic(), 1), 900)))
    if time_left("host copies"):
        Wh = rec("device -> host copy", lambda: _timed(lambda: W.cpu(), 3, sync))
        mh = torch.ones((size, size), dtype=torch.bool)
        hd = rec("host -> device copy of a mask", lambda: _timed(lambda: mh.to(device), 3, sync))
        A = W.cpu().numpy()
        for (n, m), row in rows.items():
            key = row["pattern"]
            if not time_left(f"{key} CPU exact", 3.0):
                break
            if Wh and hd:
                row["round_trip_s"] = Wh["median_s"] + hd["median_s"]
            ref = rec(f"{key} CPU exact warm-up", lambda n=n, m=m: tm.optimal_mask(A, n, m))
            if ref is not None and (n, m) in masks:
                row["exactness"] = rec(f"{key} exactness vs CPU", lambda n=n, m=m, ref=ref: exactness(
                    W, masks[(n, m)], torch.from_numpy(ref).to(device), n, m, torch))
                _log(f"{key}: exactness {row.get('exactness')}")
            row["cpu"] = rec(f"{key} CPU exact ({res['host_threads']} threads)",
                             lambda n=n, m=m: _timed(lambda: tm.optimal_mask(A, n, m), min(3, repeats)))
            publish()

    # 3. peers on the GPU: plain row-wise top-k, and entropic OT (TSENOR-style)
    for (n, m), row in rows.items():
        key = row["pattern"]
        if not time_left(f"{key} peers", 3.0):
            break
        row["topk"] = rec(f"{key} torch top-k row-wise", lambda n=n, m=m: _timed(lambda: _topk_rowwise(W, n, m, torch), repeats, sync))

        def ot(n=n, m=m, row=row):
            t = _timed(lambda: masks.__setitem__(("ot", n, m), sinkhorn_mask_torch(W, n, m)), max(1, repeats // 3), sync)
            if (n, m) in masks:
                A64 = W.abs().double()
                row["ot_kept_fraction"] = float((A64 * masks[("ot", n, m)]).sum() / (A64 * masks[(n, m)]).sum())
            del masks[("ot", n, m)]
            return t

        row["ot"] = rec(f"{key} entropic OT (TSENOR-style) GPU", ot)
        publish()

    # 4. other inputs, at 8:16
    en, em = (8, 16) if (8, 16) in rows else patterns[-1]
    res["extra_pattern"] = f"{en}:{em}"
    for label, make, keep in (("float16", lambda: W.half(), "exactly"), ("bfloat16", lambda: W.bfloat16(), "exactly"),
                              ("float32 at_most", lambda: W, "at_most")):
        if not time_left(f"{en}:{em} {label}", 8.0):
            break
        Wx = make()
        rec(f"{en}:{em} {label} warm-up", lambda Wx=Wx, keep=keep: optimal_mask_torch(Wx, en, em, keep=keep))
        t = rec(f"{en}:{em} {label}", lambda Wx=Wx, keep=keep: _timed(lambda: optimal_mask_torch(Wx, en, em, keep=keep), min(3, repeats), sync))
        if t:
            res["extra"][label] = t
    publish()

    # 5. variants: launch configurations and dual-ascent rounds (each a compile)
    for (n, m), kw in (SWEEP if sweep else []):
        if (n, m) not in masks:
            continue
        label = ", ".join(f"{k} {v}" for k, v in kw.items())
        if not time_left(f"{n}:{m} variant {label}", 8.0):
            break

        def variant(kw=kw, n=n, m=m):
            got = _kernels.solve(W, n, m, "exactly", **kw)[0]  # warm-up (compile), and the same optimum
            ex = exactness(W, got, masks[(n, m)], n, m, torch)
            if not ex["exact"]:
                raise AssertionError(f"variant {kw} is not exact: {ex}")
            return _timed(lambda: _kernels.solve(W, n, m, "exactly", **kw), max(1, repeats // 2), sync)

        t = rec(f"{n}:{m} variant {label}", variant)
        if t:
            rows[(n, m)].setdefault("sweep", {"default": rows[(n, m)].get("kernels", {}).get("median_s")})[label] = t["median_s"]
            publish()
    publish()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4096^2, 3 repeats, no sweep")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write gpu_solver.json and gpu_solver.md here")
    ap.add_argument("--rehearse-on-cpu", action="store_true",
                    help="run every step on CPU tensors (tiny sizes, with TRITON_INTERPRET=1): checks the script, not speed")
    ap.add_argument("--patterns", default=None, help="n:m list, e.g. 2:4,4:8 (default 2:4,4:8,8:16,16:32)")
    ap.add_argument("--budget-s", type=float, default=None, help="seconds for the whole run (default 85, quick 25)")
    args = ap.parse_args(argv)
    patterns = None if not args.patterns else tuple(tuple(int(v) for v in p.split(":")) for p in args.patterns.split(","))
    if args.rehearse_on_cpu:
        res = run(size=args.size or 32, device="cpu", repeats=1, sweep=True, budget_s=float("inf"), patterns=patterns)
    else:
        res = run(quick=args.quick, size=args.size, patterns=patterns, budget_s=args.budget_s)
    if "skipped" in res:
        print(f"gpu solver check skipped: {res['skipped']}")
        return 0
    print(res["markdown"])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_solver.json").write_text(json.dumps({k: v for k, v in res.items() if k != "markdown"}, indent=1, default=str))
        (args.out / "gpu_solver.md").write_text(res["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
