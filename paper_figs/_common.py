"""Shared helpers of the paper_figs scripts: paths, argument parsing, matplotlib style, saving.

Every ``figN_*.py`` script imports this module (``import _common as C`` after putting
its own folder on ``sys.path``), so each script runs alone::

    python paper_figs/fig1_md_table.py [--quick] [--out DIR]

and :mod:`make_all` runs them all. Outputs go to ``paper_figs/out/`` (the published
figures) for a full run and to a new temporary folder for ``--quick`` unless ``--out``
says otherwise: ``<name>.png`` plus the data behind it as ``<name>.csv`` and/or
``<name>.json``; every JSON records the commit and the machine (:func:`machine`).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_DIR = HERE / "out"

# numba's OpenMP threading layer and torch share libgomp; with the default (active) wait policy the
# idle OpenMP workers spin after every parallel mask computation and starve torch's training steps
# (measured here: a 6-epoch digits CNN run went from 1.6 s to 20-60 s on 2 cores). Sleep instead.
# Must be set before numba/torch load libgomp; bench subprocesses get the caller's original value.
OMP_WAIT_POLICY_WAS_SET = "OMP_WAIT_POLICY" in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# ``python paper_figs/figN.py`` puts paper_figs/ first on sys.path; the repository root is
# needed for ``import transmask`` from a plain checkout and for ``bench.peers``.
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from bench._machine import provenance, results_folder  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

#: One colour per method / structure family, used by every figure.
COLORS = {
    "dense": "#4d4d4d",
    "unstructured": "#1b9e77",
    "nm": "#7570b3",
    "transposable": "#d95f02",
    "block": "#e7298a",
    "ours:exact": "#d95f02",
    "ours:approx": "#e6ab02",
    "ours:lp": "#a6761d",
    "ortools": "#1f78b4",
    "networkx": "#6a3d9a",
    "numpy_greedy": "#33a02c",
    "sinkhorn": "#fb9a99",
}

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8.5,
    "legend.framealpha": 0.9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
plt.rcParams.update(STYLE)


def parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the options every script shares: ``--quick``, ``--out``, ``--seed``."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke run (seconds; used by the tests): the numbers mean little")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"output folder (default: {OUT_DIR}, the published figures, for a full run; "
                         "a new temporary folder for --quick)")
    ap.add_argument("--seed", type=int, default=0, help="base random seed")
    return ap


def out_dir(args) -> Path:
    """The output folder: ``--out`` if given, else :data:`OUT_DIR` for a full run and a new temporary
    folder for ``--quick`` (printed), so a smoke run never overwrites the published figures.
    Sets ``args.out`` to it, so later calls return the same folder."""
    quick_default = args.out is None and args.quick
    args.out = results_folder(args.out, args.quick, published=OUT_DIR)
    if quick_default:
        print(f"quick run: figures go to {args.out} (the published ones in {OUT_DIR} stay as they are)", flush=True)
    return Path(args.out)


def save_fig(fig, out: Path, name: str) -> Path:
    path = Path(out) / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _plain(obj):
    """JSON fallback: numpy scalars/arrays, paths, tuples."""
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


def save_json(obj, out: Path, name: str) -> Path:
    """``obj`` as ``<out>/<name>.json``; a dict without a ``"machine"`` entry gets :func:`machine`'s,
    so every results file names the commit and the machine that made it."""
    if isinstance(obj, dict) and "machine" not in obj:
        obj = {**obj, "machine": machine()}
    path = Path(out) / f"{name}.json"
    path.write_text(json.dumps(obj, indent=1, default=_plain) + "\n")
    return path


def save_csv(rows: list[dict], out: Path, name: str) -> Path:
    """Rows of dicts as CSV; the header is the union of the keys in first-seen order."""
    path = Path(out) / f"{name}.csv"
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_cell(r.get(k)) for k in keys})
    return path


def _fmt_cell(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v)
    return "" if v is None else v


def machine() -> dict:
    """What ran the script: commit (``-dirty`` when tracked files differed), CPU, cores, load, versions, date."""
    info = provenance()
    info["cores"] = info["usable_cpus"]
    for mod in ("numpy", "numba", "torch", "transmask"):
        m = sys.modules.get(mod)
        if m is not None:
            info[mod] = getattr(m, "__version__", "?")
    return info


def short_machine() -> str:
    info = machine()
    return f"{info['cpu']}, {info['cores']} cores, commit {info['git_commit']}"


class Timer:
    """``with Timer() as t: ...``; ``t.s`` seconds."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        return False


def result(name: str, out: Path, caption: str, seconds: float, **extra) -> dict:
    """What every ``main`` returns (``make_all`` builds the gallery from it)."""
    files = sorted(p.name for p in Path(out).glob(f"{name}.*"))
    return {"name": name, "png": f"{name}.png", "files": files, "caption": caption,
            "seconds": round(seconds, 1), **extra}
