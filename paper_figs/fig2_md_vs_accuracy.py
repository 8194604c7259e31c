#!/usr/bin/env python
"""Figure 2: mask diversity vs accuracy, small-scale sparse training on scikit-learn's digits.

    python paper_figs/fig2_md_vs_accuracy.py [--quick] [--out DIR] [--seeds 5] [--epochs 20]

A small CNN (:class:`transmask.training.data.DigitsCNN`: conv 1->c1, conv c1->c2,
maxpool, conv c2->c2, global average pool, linear c2->10; BatchNorm after every conv)
is trained from scratch on the 8x8 digits images (1257 train / 540 test, the split
of ``load_digits_tensors(seed=0)``) with its two inner convolutions 50 % sparse
under each mask structure: unstructured magnitude, row-wise 1:2 / 2:4 / 4:8,
transposable 1:2 / 2:4 / 4:8 (optimal masks, ``transmask.optimal_mask``), and
2x2 / 4x4 blocks. The first conv (9 inputs per output) and the classifier stay
dense, as usual. A dense model is the reference.

Training (same for every structure): Adam, lr 1e-3, batch 64, ``--epochs``
epochs; straight-through estimator (the layers of :func:`transmask.training.sparsify`,
pruned weights keep their gradient); masks recomputed from ``|W|`` every 40
optimizer steps (as in the paper) for the first 75 % of the epochs, then fixed
for the rest (so BatchNorm statistics match the final mask). Accuracy is top-1 on
the test split, mean +- std over ``--seeds`` seeds (model init and batch order).

MD is ``log10`` of the number of masks the structure allows, summed over the two
sparse layers (the MD of the model's mask set is the product of the layers'):
their 2-D views are ``(c2, 9*c1)`` and ``(c2, 9*c2)`` (channels-last, the layout of
:mod:`transmask.training`), 16x72 and 16x144 with the default channels (8, 16).

Writes ``fig2_md_vs_accuracy.png``, ``.csv`` (one row per structure and seed) and
``.json`` (summary per structure, config, machine).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _common import plt  # noqa: E402

NAME = "fig2_md_vs_accuracy"

#: (label, family, parameters). family: dense | unstructured | nm | transposable | block.
STRUCTURES = [
    ("dense", "dense", {}),
    ("unstructured", "unstructured", {}),
    ("1:2", "nm", {"n": 1, "m": 2}),
    ("2:4", "nm", {"n": 2, "m": 4}),
    ("4:8", "nm", {"n": 4, "m": 8}),
    ("1:2-T", "transposable", {"n": 1, "m": 2}),
    ("2:4-T", "transposable", {"n": 2, "m": 4}),
    ("4:8-T", "transposable", {"n": 4, "m": 8}),
    ("block 2x2", "block", {"b": 2}),
    ("block 4x4", "block", {"b": 4}),
]
QUICK_STRUCTURES = ("dense", "unstructured", "2:4", "2:4-T", "block 2x2")
UPDATE_EVERY = 40
DENSITY = 0.5


# ----------------------------------------------------------------------------- masks on 2-D views
def structure_mask(A: np.ndarray, family: str, p: dict) -> np.ndarray:
    """Mask (bool, shaped like ``A``) of the non-negative 2-D scores ``A`` keeping half the weights."""
    import transmask as tm

    if family == "nm":
        return tm.nm_mask(A, p["n"], p["m"])
    if family == "transposable":
        return tm.optimal_mask(A, p["n"], p["m"], method="exact")
    if family == "unstructured":
        k = int(round(A.size * DENSITY))
        flat = np.zeros(A.size, dtype=bool)
        flat[np.argsort(-A, axis=None, kind="stable")[:k]] = True
        return flat.reshape(A.shape)
    if family == "block":
        b = p["b"]
        R, Cc = A.shape
        s = A.reshape(R // b, b, Cc // b, b).sum(axis=(1, 3))
        k = int(round(s.size * DENSITY))
        keep = np.zeros(s.size, dtype=bool)
        keep[np.argsort(-s, axis=None, kind="stable")[:k]] = True
        return np.repeat(np.repeat(keep.reshape(s.shape), b, axis=0), b, axis=1)
    raise ValueError(family)


def log10_md(shape2d, family: str, p: dict) -> float:
    """log10 mask diversity of one layer's 2-D view at 50 % density (:mod:`transmask.diversity`)."""
    from transmask.diversity import log10_mask_diversity

    T = shape2d[0] * shape2d[1]
    if family in ("nm", "transposable"):
        return log10_mask_diversity(family, T, p["n"], p["m"])
    return log10_mask_diversity(family, T, 1, 2, b=p.get("b"))  # unstructured / blocks: density 1/2


def check_mask(M: np.ndarray, family: str, p: dict) -> bool:
    import transmask as tm

    if family == "nm":
        return bool(tm.is_nm(M, p["n"], p["m"], keep="at_most"))
    if family == "transposable":
        return bool(tm.is_transposable(M, p["n"], p["m"], keep="exactly"))
    return abs(M.mean() - DENSITY) < 1e-9


def structure_controller(model, family: str, p: dict, update_every: int, update_until: int):
    """Sparsify ``model``'s inner convs with masks of ``family``; return the mask controller.

    N:M families are :func:`transmask.training.sparsify` as it stands (exact transposable
    masks). Unstructured and block masks, which the library's layers do not compute, come
    from :func:`structure_mask` through a :class:`~transmask.training.MaskController`
    subclass: same layers, same schedule, only the mask rule differs.
    """
    from transmask.training import MaskController, sparsify

    class StructureMasks(MaskController):
        def update_masks(self) -> dict[str, int]:
            import torch

            from transmask.views import view_to_weight

            changed = {}
            with torch.no_grad():
                for name, layer in self.layers.items():
                    M = structure_mask(np.abs(layer.weight_2d()), family, p)
                    new = torch.from_numpy(view_to_weight(M, tuple(layer.weight.shape))).to(layer.mask.device)
                    changed[name] = int((new != layer.mask).sum())
                    layer.mask.copy_(new)
            self.history.append({"step": self.steps, "changed": changed})
            return changed

    nm = family in ("nm", "transposable")
    n, m = (p["n"], p["m"]) if nm else (1, 2)  # 1:2 layers whose masks StructureMasks replaces at once
    ctl = sparsify(model, n, m, transposable=(family == "transposable"), method="exact", update_every=update_every,
                   update_until=update_until, skip_first=True, skip_last=True)
    if not nm:
        ctl.__class__ = StructureMasks
        ctl.update_masks()
    return ctl


# ----------------------------------------------------------------------------- one run
def run_one(label, family, p, seed, data, channels, epochs, batch_size=64, lr=1e-3):
    import torch

    from transmask.training.data import DigitsCNN, evaluate, train
    from transmask.views import weight_to_2d

    t0 = time.perf_counter()
    model = DigitsCNN(channels=channels, seed=seed)
    steps_per_epoch = -(-len(data.x_train) // batch_size)
    ctl = None
    if family != "dense":
        # masks recomputed every UPDATE_EVERY optimizer steps before freeze_at, then fixed
        freeze_at = int(0.75 * epochs) * steps_per_epoch
        ctl = structure_controller(model, family, p, UPDATE_EVERY, max(freeze_at - 1, 0))
    losses = train(model, data.x_train, data.y_train, epochs=epochs, lr=lr, batch_size=batch_size,
                   seed=seed, controller=ctl)
    acc = evaluate(model, data.x_test, data.y_test)
    row = {"structure": label, "family": family, "seed": seed, "test_acc": acc,
           "train_acc": evaluate(model, data.x_train, data.y_train), "final_loss": losses[-1],
           "seconds": time.perf_counter() - t0}
    if ctl is not None:
        layers = ctl.layers
        valid, shapes, md = [], [], 0.0
        for layer in layers.values():
            M = weight_to_2d(layer.mask.detach().cpu().numpy())
            valid.append(check_mask(M, family, p))
            shapes.append(list(M.shape))
            md += log10_md(M.shape, family, p)
        updates = [h for h in ctl.history if h["step"] > 0]
        last = float(np.mean([c / layers[k].mask.numel() for k, c in updates[-1]["changed"].items()])) if updates else 0.0
        row.update(log10_md=md, masks_valid=all(valid), layer_views=shapes, density=float(np.mean(
            [layer.mask.float().mean().item() for layer in layers.values()])), mask_changed_last_update=last)
    else:
        row.update(log10_md=None, masks_valid=True, density=1.0)
    del torch
    return row


# ----------------------------------------------------------------------------- plot
def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); nan with fewer than 3 points."""
    if len(x) < 3:
        return float("nan")

    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for val in np.unique(v):  # ties share their mean rank
            r[v == val] = r[v == val].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def summarise(rows):
    out = []
    for label, family, p in STRUCTURES:
        sub = [r for r in rows if r["structure"] == label]
        if not sub:
            continue
        acc = np.array([r["test_acc"] for r in sub]) * 100
        out.append({"structure": label, "family": family, "log10_md": sub[0]["log10_md"], "seeds": len(sub),
                    "acc_mean": float(acc.mean()), "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                    "acc_min": float(acc.min()), "acc_max": float(acc.max()),
                    "masks_valid": all(r["masks_valid"] for r in sub)})
    return out


def plot(summary, cfg, out):
    fig, ax = plt.subplots(figsize=(8.2, 5.2))
    dense = next((s for s in summary if s["family"] == "dense"), None)
    if dense:
        ax.axhline(dense["acc_mean"], color=C.COLORS["dense"], ls="--", lw=1,
                   label=f"dense reference ({dense['acc_mean']:.2f} ± {dense['acc_std']:.2f} %)")
        ax.axhspan(dense["acc_mean"] - dense["acc_std"], dense["acc_mean"] + dense["acc_std"],
                   color=C.COLORS["dense"], alpha=0.1)
    seen = set()
    names = {"unstructured": "unstructured", "nm": "row-wise N:M", "transposable": "transposable N:M",
             "block": "b x b blocks"}
    for s in summary:
        if s["family"] == "dense":
            continue
        fam = s["family"]
        ax.errorbar(s["log10_md"], s["acc_mean"], yerr=s["acc_std"], fmt="o", ms=7, capsize=4,
                    color=C.COLORS[fam], label=None if fam in seen else names[fam])
        seen.add(fam)
        ax.annotate(s["structure"], (s["log10_md"], s["acc_mean"]), textcoords="offset points",
                    xytext=(6, -12 if s["structure"] in ("1:2-T",) else 5), fontsize=8.5)
    ax.set_xlabel("log10 mask diversity of the two sparse conv layers (log10 of number of masks)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title(f"MD vs accuracy at 50% sparsity: DigitsCNN{tuple(cfg['channels'])} on sklearn digits, "
                 f"{cfg['seeds']} seeds", fontsize=10.5)
    ax.legend(loc="lower right")
    if np.isfinite(cfg.get("spearman_md_vs_mean_acc", float("nan"))):
        ax.text(0.02, 0.97, f"Spearman rank correlation (MD, mean accuracy): {cfg['spearman_md_vs_mean_acc']:.2f}",
                transform=ax.transAxes, va="top", fontsize=8.5)
    views = " + ".join(f"{a}x{b}" for a, b in cfg["layer_views"])
    fig.text(0.01, -0.04, f"Scale: 1257 training / 540 test 8x8 images, {cfg['epochs']} epochs, Adam; sparse layers "
             f"(2-D views) {views}; CPU ({cfg['machine']}).", fontsize=8)
    fig.tight_layout()
    return C.save_fig(fig, out, NAME)


def main(argv=None) -> dict:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds per structure (default 5)")
    ap.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    ap.add_argument("--channels", default="8,16", help="DigitsCNN channels c1,c2 (default 8,16: small, so "
                    "sparsity costs accuracy)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest for this tiny CNN)")
    args = ap.parse_args(argv)
    out = C.out_dir(args)
    import torch

    from transmask.training.data import load_digits_tensors

    torch.set_num_threads(args.threads)
    channels = tuple(int(c) for c in args.channels.split(","))
    seeds = 1 if args.quick else args.seeds
    epochs = 2 if args.quick else args.epochs
    structures = [s for s in STRUCTURES if not args.quick or s[0] in QUICK_STRUCTURES]
    data = load_digits_tensors(seed=0, images=True)
    rows = []
    with C.Timer() as t:
        for seed in range(args.seed, args.seed + seeds):
            for label, family, p in structures:
                r = run_one(label, family, p, seed, data, channels, epochs)
                rows.append(r)
                print(f"[{time.perf_counter() - t.t0:6.1f}s] {label:<13} seed {seed}: test {r['test_acc']:.4f} "
                      f"train {r['train_acc']:.4f} ({r['seconds']:.1f}s)", flush=True)
    summary = summarise(rows)
    rho = spearman([s["log10_md"] for s in summary if s["family"] != "dense"],
                   [s["acc_mean"] for s in summary if s["family"] != "dense"])
    views = next((r["layer_views"] for r in rows if r.get("layer_views")), [])
    cfg = {"channels": list(channels), "epochs": epochs, "seeds": seeds, "batch_size": 64, "lr": 1e-3,
           "optimizer": "Adam", "update_every": UPDATE_EVERY, "masks_fixed_after_epoch": int(0.75 * epochs),
           "density": DENSITY, "layer_views": views, "data": "sklearn digits, load_digits_tensors(seed=0)",
           "machine": C.short_machine(), "quick": args.quick, "spearman_md_vs_mean_acc": rho}
    C.save_csv(rows, out, NAME)
    C.save_json({"config": cfg, "summary": summary, "runs": rows, "machine": C.machine(),
                 "seconds": t.s}, out, NAME)
    plot(summary, cfg, out)
    best = sorted((s for s in summary if s["family"] != "dense"), key=lambda s: -s["acc_mean"])
    caption = (f"Small-scale MD vs accuracy: DigitsCNN{channels} on sklearn digits (1257 train / 540 test), "
               f"{epochs} epochs, {seeds} seeds, 50% sparsity in the two inner convs "
               f"({' and '.join(f'{a}x{b}' for a, b in views)} views; MD summed over them). "
               + "; ".join(f"{s['structure']} {s['acc_mean']:.2f}±{s['acc_std']:.2f}%" for s in summary)
               + f". Spearman rank correlation of mean accuracy with log10 MD over the sparse structures: {rho:.2f}."
               + f" Run time {t.s:.0f} s on CPU.")
    print(caption)
    return C.result(NAME, out, caption, t.s, best=best[0]["structure"] if best else None)


if __name__ == "__main__":
    main()
