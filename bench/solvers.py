#!/usr/bin/env python
"""Bench: transmask's solvers against peers on transposable N:M masks.

    python bench/solvers.py            # full run (sizes 512..8192), ~15-20 min on 2 cores
    python bench/solvers.py --quick    # smoke test, < 1 min, into a new temporary folder (printed)
    python bench/solvers.py --render bench/results/solvers.json   # rebuild the markdown from the JSON

For every matrix size, n:m pattern and weight distribution (Gaussian, Student-t
with df=3) it times

- ours: ``transmask.optimal_mask`` with ``method="exact"`` and ``"approx"``
  (``keep="exactly"``), median of ``--repeats`` runs after a warm-up call, Numba
  threads set with ``numba.set_num_threads``; ``method="lp"`` only at sizes
  <= 512 and only on a sample of tiles;
- the peers of ``bench/peers`` (OR-tools and networkx min-cost flow per tile,
  the paper's greedy vectorised in numpy, entropic OT + rounding). Per-tile
  Python peers always run on a random sample of tiles (as many as fit in
  ``--sample-seconds``) and their time is extrapolated to the full matrix;
  vectorised peers run on the full matrix up to ``--full-limit`` weights and are
  extrapolated from a sample above it. Extrapolated times are labelled.

Every mask is checked with ``transmask.is_transposable`` in the counting mode
its method promises (``exactly`` for ours and the flow peers, ``at_most`` for
the greedy-like peers, which can leave tile-rows short; the number of short
tile-rows is reported). Quality = kept L1 / optimal kept L1 with the optimum
per tile from our exact solver (``keep="exactly"``): overall, mean over tiles
and worst tile; sampled methods are scored on their sampled tiles. (An
``at_most`` mask can in principle exceed the ``exactly`` optimum.)

A scaling section times exact/approx against matrix size (linear in the number
of weights is expected) and against Numba thread count at the largest size.
Results go to ``<out>/solvers.json`` and ``<out>/solvers.md``: ``--out`` defaults
to ``bench/results`` (the published results) for a full run and to a new temporary
folder for ``--quick``, so a smoke run never overwrites published numbers. Both
files record the commit (``-dirty`` when tracked files differed from it) and the
machine that made them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numba  # noqa: E402

import transmask as tm  # noqa: E402
from bench._machine import RESULTS, provenance, provenance_line, results_folder  # noqa: E402
from bench._weights import make_weights  # noqa: E402
from bench.peers import PEERS  # noqa: E402

OURS = ("exact", "approx")


# ----------------------------------------------------------------------------- inputs and helpers
def sample_matrix(A: np.ndarray, m: int, idx: np.ndarray) -> np.ndarray:
    """The tiles ``idx`` (row-major tile order) of ``A`` stacked vertically: shape ``(len(idx)*m, m)``."""
    gc = A.shape[1] // m
    a, b = np.divmod(idx, gc)
    rows = (a[:, None] * m + np.arange(m)[None, :])[:, :, None]
    cols = (b[:, None] * m + np.arange(m)[None, :])[:, None, :]
    return np.ascontiguousarray(A[rows, cols].reshape(len(idx) * m, m))


def quality(kept: np.ndarray, opt: np.ndarray) -> dict:
    """Kept/optimal overall, mean over tiles and worst tile (tiles with optimum 0 count as 1)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(opt > 0, kept / np.where(opt > 0, opt, 1.0), 1.0)
    return {
        "l1_over_opt": float(kept.sum() / opt.sum()) if opt.sum() > 0 else 1.0,
        "tile_mean": float(ratio.mean()),
        "tile_worst": float(ratio.min()),
    }


def short_rows(mask: np.ndarray, n: int, m: int) -> int:
    """Number of tile-rows plus tile-columns (full tiles) keeping fewer than n."""
    R, C = mask.shape
    t = mask.reshape(R // m, m, C // m, m)
    return int((t.sum(axis=3) < n).sum() + (t.sum(axis=1) < n).sum())


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def machine_info(argv: list[str]) -> dict:
    """:func:`bench._machine.provenance` plus Numba's threads, library versions and the command."""
    info = provenance()
    versions = {"python": info["python"], "numpy": np.__version__, "numba": numba.__version__,
                "transmask": tm.__version__}
    for mod in ("ortools", "networkx", "pulp"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # optional peer dependency missing
            versions[mod] = None
    info.update(numba_max_threads=numba.config.NUMBA_NUM_THREADS, versions=versions,
                command=" ".join(["python"] + argv), loadavg_start=info.pop("loadavg"))
    return info


# ----------------------------------------------------------------------------- timing ours
class Ours:
    """Times transmask's solvers, caching results so the scaling section reuses the main runs."""

    def __init__(self, repeats: int, slow_s: float = 3.0):
        self.repeats = repeats
        self.slow_s = slow_s
        self.cache: dict = {}
        self.available: dict[str, str | None] = {}
        self.warmed: set = set()

    def check(self, method: str) -> str | None:
        """None when ``method`` runs, else the error text."""
        if method not in self.available:
            try:
                tm.optimal_mask(np.arange(64, dtype=np.float32).reshape(8, 8), 2, 4, method=method)
                self.available[method] = None
            except Exception as exc:  # solver not landed or its dependency missing
                self.available[method] = f"{type(exc).__name__}: {exc}"
        return self.available[method]

    def run(self, W, key, method: str, n: int, m: int, threads: int):
        """(mask, median seconds, all seconds) for ``optimal_mask(W, n, m, method)`` with ``threads``."""
        ck = (key, method, n, m, threads)
        if ck in self.cache:
            return self.cache[ck]
        numba.set_num_threads(threads)
        if (method, n, m, threads) not in self.warmed:  # JIT + thread pool warm-up on a small matrix
            tm.optimal_mask(W[: 16 * m, : 16 * m], n, m, method=method)
            self.warmed.add((method, n, m, threads))
        # warm-up on this very input (caches, pages); JIT and threads are warm already, so a slow
        # first call (> slow_s) is a fair sample by itself and is not repeated (keeps the run short)
        mask, t0 = timed(tm.optimal_mask, W, n, m, method)
        times = [t0] if t0 > self.slow_s else []
        for _ in range(self.repeats if not times else 0):
            mask, t = timed(tm.optimal_mask, W, n, m, method)
            times.append(t)
        res = (mask, statistics.median(times), times)
        self.cache[ck] = res
        return res


# ----------------------------------------------------------------------------- one configuration
def bench_config(W, key, n, m, args, ours: Ours, rng) -> list[dict]:
    size = W.shape[0]
    T = (W.shape[0] // m) * (W.shape[1] // m)
    A = np.abs(W)
    rows = []
    base = {"size": size, "pattern": f"{n}:{m}", "dist": key[1], "tiles": T}

    # ---- ours, full matrix
    masks = {}
    for method in args.ours:
        err = ours.check(method)
        if err:
            rows.append({**base, "method": f"ours:{method}", "error": err})
            continue
        mask, t, ts = ours.run(W, key, method, n, m, args.threads)
        masks[method] = mask
        rows.append({**base, "method": f"ours:{method}", "time_s": t, "times_s": ts, "timing": "full matrix",
                     "threads": args.threads, "keep": "exactly",
                     "valid": bool(tm.is_transposable(mask, n, m, keep="exactly")),
                     "short_rows_cols": short_rows(mask, n, m)})

    # ---- the optimum per tile
    sample_idx = np.sort(rng.choice(T, size=min(T, args.max_sample_tiles), replace=False))
    if "exact" in masks:
        opt = tm.tile_kept_l1(A, masks["exact"], m).ravel()
        opt_source = "ours:exact"
    else:  # fall back to OR-tools on the sampled tiles only
        S = sample_matrix(W, m, sample_idx)
        opt = np.full(T, np.nan)
        opt[sample_idx] = tm.tile_kept_l1(np.abs(S), PEERS["ortools"].fn(S, n, m), m).ravel()
        opt_source = "ortools (sampled tiles)"
    for r in rows:
        if r.get("method", "").startswith("ours:") and "error" not in r:
            kept = tm.tile_kept_l1(A, masks[r["method"][5:]], m).ravel()
            have = ~np.isnan(opt)
            r.update(quality(kept[have], opt[have]), quality_tiles=int(have.sum()), optimum=opt_source)

    # ---- LP (ours, slow reference): small sizes only, on a sample of tiles
    if size <= args.lp_max_size and "lp" in args.methods:
        err = ours.check("lp")
        if err:
            rows.append({**base, "method": "ours:lp", "error": err})
        else:
            rows.append(run_sampled(W, A, n, m, "ours:lp",
                                    lambda X, n, m: tm.optimal_mask(X, n, m, method="lp"),
                                    "exactly", sample_idx, opt, opt_source, args, base,
                                    budget=args.sample_seconds))

    # ---- peers
    for name in args.peers:
        peer = PEERS[name]
        full = (not peer.per_tile) and W.size <= args.full_limit
        if full:
            peer.fn(W[:m, :m], n, m)  # warm-up: lazy imports
            mask, t = timed(peer.fn, W, n, m)
            kept = tm.tile_kept_l1(A, mask, m).ravel()
            have = ~np.isnan(opt)
            row = {**base, "method": name, "time_s": t, "timing": "full matrix", "threads": 1, "keep": peer.keep,
                   "valid": bool(tm.is_transposable(mask, n, m, keep=peer.keep)),
                   "valid_exactly": bool(tm.is_transposable(mask, n, m, keep="exactly")),
                   "short_rows_cols": short_rows(mask, n, m),
                   **quality(kept[have], opt[have]), "quality_tiles": int(have.sum()), "optimum": opt_source}
            rows.append(row)
        else:
            if peer.per_tile:
                idx = sample_idx
            else:  # vectorised: a sample of about full_limit/16 weights is plenty to time it
                k = min(T, max(64, args.full_limit // 16 // (m * m)))
                idx = np.sort(rng.choice(T, size=k, replace=False))
                if np.isnan(opt[idx]).any():
                    idx = sample_idx
            rows.append(run_sampled(W, A, n, m, name, peer.fn, peer.keep, idx, opt, opt_source, args, base,
                                    budget=args.sample_seconds if peer.per_tile else None))
    return rows


def run_sampled(W, A, n, m, name, fn, keep, idx, opt, opt_source, args, base, budget=None) -> dict:
    """Time ``fn`` on the tiles ``idx`` (in batches until ``budget`` seconds are spent) and extrapolate."""
    T = base["tiles"]
    S = sample_matrix(W, m, idx)
    fn(S[:m], n, m)  # warm-up on one tile: lazy imports, caches
    batch = 8
    masks, spent, done = [], 0.0, 0
    while done < len(idx):
        if budget is not None and spent >= budget and done >= args.min_sample_tiles:
            break
        stop = len(idx) if budget is None else min(len(idx), done + batch)
        sub = S[done * m: stop * m]
        mk, t = timed(fn, sub, n, m)
        masks.append(mk)
        spent += t
        done = stop
    used = idx[:done]
    M = np.concatenate(masks, axis=0)
    kept = tm.tile_kept_l1(np.abs(S[: done * m]), M, m).ravel()
    return {**base, "method": name, "time_s": spent * T / done, "timing": f"extrapolated from {done} tiles",
            "sample_tiles": int(done), "sample_time_s": spent, "threads": 1, "keep": keep,
            "valid": bool(tm.is_transposable(M, n, m, keep=keep)),
            "valid_exactly": bool(tm.is_transposable(M, n, m, keep="exactly")),
            "short_rows_cols": short_rows(M, n, m),
            **quality(kept, opt[used]), "quality_tiles": int(done), "optimum": opt_source}


# ----------------------------------------------------------------------------- scaling
def bench_scaling(args, ours: Ours, weights_cache) -> tuple[list[dict], list[dict]]:
    by_size, by_threads = [], []
    for size in args.scaling_sizes:
        for n, m in args.patterns:
            W = weights_cache(size, "gaussian")
            for method in args.ours:
                if ours.check(method):
                    continue
                _, t, ts = ours.run(W, (size, "gaussian"), method, n, m, args.threads)
                by_size.append({"size": size, "pattern": f"{n}:{m}", "method": f"ours:{method}",
                                "threads": args.threads, "time_s": t, "times_s": ts,
                                "ns_per_weight": t / W.size * 1e9})
    big = args.thread_size if args.thread_size in args.scaling_sizes + args.sizes else max(args.scaling_sizes)
    for n, m in args.patterns:
        W = weights_cache(big, "gaussian")
        for method in args.ours:
            if ours.check(method):
                continue
            for th in args.thread_list:
                _, t, ts = ours.run(W, (big, "gaussian"), method, n, m, th)
                by_threads.append({"size": big, "pattern": f"{n}:{m}", "method": f"ours:{method}",
                                   "threads": th, "time_s": t, "times_s": ts})
    return by_size, by_threads


# ----------------------------------------------------------------------------- report
def fmt_time(r: dict) -> str:
    if "error" in r:
        return "n/a"
    t = r["time_s"]
    s = f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"
    return s + ("*" if r["timing"] != "full matrix" else "")


def fmt_q(r: dict | None) -> str:
    if r is None or "error" in r:
        return "n/a"
    return f"{r['tile_mean']:.4f} / {r['tile_worst']:.3f}"


def method_table(rows: list[dict], methods: list[str], head: str, lines: list[tuple[str, dict]], fmt) -> list[str]:
    """Markdown lines of a table with one column per method: each of ``lines`` is (its first cells,
    the values a result row must have); a cell is ``fmt`` of the matching row of that method, or of None."""
    L = [f"| {head} | " + " | ".join(methods) + " |", "|---" * (head.count("|") + 1) + "|" + "---|" * len(methods)]
    for first, match in lines:
        cells = [fmt(next((r for r in rows if r["method"] == meth and all(r[k] == v for k, v in match.items())), None))
                 for meth in methods]
        L.append(f"| {first} | " + " | ".join(cells) + " |")
    return L + [""]


def scaling_table(rows: list[dict], ours, patterns, columns: list[str], last: str, summary) -> list[str]:
    """Markdown lines of a scaling table: one line per method and pattern, the times in ``columns``
    order, then ``summary(rows of that line)`` under the heading ``last``."""
    L = ["| method | n:m | " + " | ".join(columns) + f" | {last} |", "|---|---|" + "---|" * (len(columns) + 1)]
    for meth in ours:
        for p in patterns:
            rs = [r for r in rows if r["method"] == f"ours:{meth}" and r["pattern"] == p]
            if rs:
                cells = [fmt_time({**r, "timing": "full matrix"}) for r in rs]
                L.append(f"| ours:{meth} | {p} | " + " | ".join(cells) + f" | {summary(rs)} |")
    return L + [""]


def markdown(report: dict) -> str:
    rows = report["results"]
    mi = report["machine"]
    methods = []
    for r in rows:
        if r["method"] not in methods:
            methods.append(r["method"])
    sizes = sorted({r["size"] for r in rows})
    patterns = list(dict.fromkeys(r["pattern"] for r in rows))
    dists = list(dict.fromkeys(r["dist"] for r in rows))
    L = []
    L.append("# Transposable N:M mask solvers: transmask vs peers\n")
    L.append(f"Machine: {provenance_line(mi)}. Numba threads for ours: {report['config']['threads']}; peers "
             f"single-threaded; numpy {mi['versions']['numpy']}, numba {mi['versions']['numba']}, "
             f"ortools {mi['versions']['ortools']}, networkx {mi['versions']['networkx']}; load average at start "
             f"{', '.join(f'{x:.2f}' for x in mi['loadavg_start'] or [])}.\n")
    L.append(f"Command: `{mi['command']}`\n")
    load = max((mi.get("loadavg_start") or [0])[:1] + (mi.get("loadavg_end") or [0])[:1])
    if load > 0.75 * (mi.get("usable_cpus") or 1):
        L.append(f"**Note:** the machine was shared with other work during this run (1-min load average up to "
                 f"{load:.1f} on {mi['usable_cpus']} CPUs, end of run {(mi.get('loadavg_end') or [0])[0]:.1f}); "
                 "all times, ours and peers alike, are inflated and noisy, and the thread-scaling numbers "
                 "in particular are not meaningful.\n")
    L.append("Matrices are square float32. Ours: `transmask.optimal_mask(W, n, m, method=..., keep=\"exactly\")`, "
             f"median of {report['config']['repeats']} runs after a warm-up call (JIT warmed on a small matrix first; "
             f"a warm-up call slower than {report['config'].get('slow_seconds', 3.0):g} s is used as the only timing). "
             "Peers: one run. `*` = per-tile peer (or large matrix) timed on a random "
             "sample of tiles and extrapolated linearly to the full matrix (see the JSON for the sample size).\n")
    dist0 = "gaussian" if "gaussian" in dists else dists[0]
    L.append(f"## Time for the full matrix ({dist0} weights)\n")
    L += method_table(rows, methods, "size | n:m",
                      [(f"{s}² | {p}", {"size": s, "pattern": p, "dist": dist0}) for s in sizes for p in patterns],
                      lambda r: "-" if r is None else fmt_time(r))
    big = max(sizes)
    L.append(f"## Quality at {big}²: kept L1 / optimal, mean over tiles / worst tile\n")
    L.append("Optimum per tile from ours:exact (`keep=\"exactly\"`). Sampled methods are scored on their sampled "
             "tiles. `at_most` peers may leave tile-rows/columns short of n (column *short* in the detailed table).\n")
    qmethods = [m for m in methods if m != "ours:lp"] if big > report["config"]["lp_max_size"] else methods
    L += method_table(rows, qmethods, "dist | n:m",
                      [(f"{d} | {p}", {"size": big, "pattern": p, "dist": d}) for d in dists for p in patterns], fmt_q)
    if report["scaling_size"]:
        L.append(f"## Scaling with matrix size (gaussian, {report['config']['threads']} threads)\n")
        L.append("Time per weight should stay flat if the time is linear in the number of weights.\n")
        L += scaling_table(report["scaling_size"], report["config"]["ours"], patterns,
                           [f"{s}²" for s in report["config"]["scaling_sizes"]], "ns/weight (smallest → largest)",
                           lambda rs: f"{rs[0]['ns_per_weight']:.2f} → {rs[-1]['ns_per_weight']:.2f}")
    if report["scaling_threads"]:
        L.append(f"## Scaling with Numba threads ({report['scaling_threads'][0]['size']}², gaussian)\n")
        L += scaling_table(report["scaling_threads"], report["config"]["ours"], patterns,
                           [f"{t} thr" for t in report["config"]["thread_list"]], "speed-up",
                           lambda rs: f"{rs[0]['time_s'] / rs[-1]['time_s']:.2f}x")
    L.append("## All results\n")
    L.append("| size | n:m | dist | method | time | timing | valid (keep) | short | L1/opt | tile mean | worst tile |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            L.append(f"| {r['size']} | {r['pattern']} | {r['dist']} | {r['method']} | n/a | {r['error'][:60]} "
                     "| | | | | |")
            continue
        L.append(f"| {r['size']} | {r['pattern']} | {r['dist']} | {r['method']} | {fmt_time(r)} | {r['timing']} "
                 f"| {'yes' if r['valid'] else 'NO'} ({r['keep']}) | {r['short_rows_cols']} "
                 f"| {r['l1_over_opt']:.4f} | {r['tile_mean']:.4f} | {r['tile_worst']:.4f} |")
    L.append("")
    L.append("*short* = tile-rows + tile-columns keeping fewer than n (in the timed tiles). "
             f"Peers: " + "; ".join(f"`{p.name}`: {p.description}" for p in PEERS.values()) + ".\n")
    return "\n".join(L)


# ----------------------------------------------------------------------------- main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, short sampling: a smoke test (< 1 min)")
    ap.add_argument("--sizes", type=str, default=None, help="comma-separated square sizes (default 512,2048,8192)")
    ap.add_argument("--patterns", type=str, default="2:4,4:8,8:16,16:32", help="comma-separated n:m")
    ap.add_argument("--dists", type=str, default="gaussian,student_t", help="gaussian and/or student_t")
    ap.add_argument("--threads", type=int, default=None, help="Numba threads for ours (default: all)")
    ap.add_argument("--thread-list", type=str, default=None, help="thread counts for the scaling run (default 1,all)")
    ap.add_argument("--scaling-sizes", type=str, default=None, help="default 512,1024,2048,4096,8192")
    ap.add_argument("--thread-size", type=int, default=None,
                    help="matrix size of the thread-count scaling run (default 4096; quick 256)")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--peers", type=str, default=",".join(PEERS), help="comma-separated peer names")
    ap.add_argument("--methods", type=str, default="exact,approx,lp", help="ours to run (lp only at small sizes)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats for ours (default 3; quick 1)")
    ap.add_argument("--slow-seconds", type=float, default=3.0,
                    help="ours: a first (warm-JIT) call slower than this is used as the only timing")
    ap.add_argument("--sample-seconds", type=float, default=None,
                    help="time budget per per-tile peer and configuration (default 1.5 s; quick 0.1 s)")
    ap.add_argument("--max-sample-tiles", type=int, default=None, help="default 512; quick 64")
    ap.add_argument("--min-sample-tiles", type=int, default=None, help="default 16; quick 8")
    ap.add_argument("--full-limit", type=int, default=None,
                    help="vectorised peers run on the full matrix up to this many weights (default 2048*2048)")
    ap.add_argument("--lp-max-size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=str, default=None,
                    help=f"output folder (default: {RESULTS} for a full run, a new temporary folder for --quick, "
                         "so a smoke run never overwrites the published results)")
    args = ap.parse_args(argv)
    q = args.quick
    args.sizes = [int(s) for s in (args.sizes or ("128" if q else "512,2048,8192")).split(",")]
    args.patterns = [tuple(int(x) for x in p.split(":")) for p in args.patterns.split(",")]
    args.dists = args.dists.split(",")
    maxth = numba.config.NUMBA_NUM_THREADS
    args.threads = min(args.threads or maxth, maxth)
    args.thread_list = sorted({min(int(t), maxth) for t in (args.thread_list or f"1,{maxth}").split(",")})
    args.scaling_sizes = [] if args.no_scaling else [
        int(s) for s in (args.scaling_sizes or ("128,256" if q else "512,1024,2048,4096,8192")).split(",")]
    args.thread_size = args.thread_size or (256 if q else 4096)
    args.peers = [p for p in args.peers.split(",") if p]
    for p in args.peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}; choose from {sorted(PEERS)}")
    args.methods = args.methods.split(",")
    args.ours = tuple(m for m in OURS if m in args.methods)
    args.repeats = args.repeats or (1 if q else 3)
    args.sample_seconds = args.sample_seconds if args.sample_seconds is not None else (0.1 if q else 1.5)
    args.max_sample_tiles = args.max_sample_tiles or (64 if q else 512)
    args.min_sample_tiles = args.min_sample_tiles or (8 if q else 16)
    args.full_limit = args.full_limit or 2048 * 2048
    for s in args.sizes + args.scaling_sizes:
        for n, m in args.patterns:
            if s % m:
                ap.error(f"size {s} is not a multiple of m={m}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"]:  # re-render the markdown of an earlier run: --render results/solvers.json
        src = Path(argv[1])
        md = markdown(json.loads(src.read_text()))
        src.with_suffix(".md").write_text(md)
        print(md)
        return 0
    args = parse_args(argv)
    out = results_folder(args.out, args.quick)
    print(f"results go to {out}", flush=True)
    report = {"machine": machine_info([sys.argv[0]] + list(argv)),
              "config": {k: v for k, v in vars(args).items() if k != "out"},
              "results": [], "scaling_size": [], "scaling_threads": []}
    ours = Ours(args.repeats, args.slow_seconds)

    cache: dict = {}

    def weights(size, dist):
        key = (size, dist)
        if key not in cache:
            cache.clear()  # keep one matrix alive at a time (8192² float32 = 256 MB)
            cache[key] = make_weights(size, dist, args.seed + size + (1 if dist == "student_t" else 0))
        return cache[key]

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    for size in args.sizes:
        for dist in args.dists:
            W = weights(size, dist)
            for n, m in args.patterns:
                t0 = time.perf_counter()
                rows = bench_config(W, (size, dist), n, m, args, ours, rng)
                report["results"].extend(rows)
                print(f"[{time.perf_counter() - t_start:7.1f}s] {size}² {dist} {n}:{m} "
                      f"({time.perf_counter() - t0:.1f}s): "
                      + ", ".join(f"{r['method']}={fmt_time(r)}" for r in rows), flush=True)
    if args.scaling_sizes:
        report["scaling_size"], report["scaling_threads"] = bench_scaling(args, ours, weights)
        print(f"[{time.perf_counter() - t_start:7.1f}s] scaling done", flush=True)
    report["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["machine"]["wall_s"] = time.perf_counter() - t_start
    md = markdown(report)
    (out / "solvers.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "solvers.md").write_text(md)
    print(md)
    print(f"wrote {out / 'solvers.json'} and {out / 'solvers.md'}", flush=True)
    bad = [r for r in report["results"] if "error" not in r and not r["valid"]]
    if bad:
        print(f"INVALID masks: {[(r['size'], r['pattern'], r['dist'], r['method']) for r in bad]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
