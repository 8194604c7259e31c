#!/usr/bin/env python
"""Figure 5: AdaPrune, accuracy before and after converting a trained dense model to 2:4 and 4:8.

    python paper_figs/fig5_adaprune.py [--quick] [--out DIR] [--seeds 3] [--steps 1000]

A dense :class:`transmask.training.data.DigitsCNN` (channels 8, 16; BatchNorm) is
trained on scikit-learn's digits (1257 train / 540 test images, 20 epochs, Adam),
then converted without retraining to row-wise and transposable 2:4 and 4:8 (its two
inner convolutions; the first conv and the classifier stay dense, as in fig. 2):

- ``magnitude``: :func:`transmask.training.magnitude_prune` (the N:M mask of |W|, optimal
  for the transposable case, pruned weights zeroed), BatchNorm statistics as trained;
- ``magnitude + BN``: the same with BatchNorm statistics re-estimated on the calibration set;
- ``AdaPrune``: :func:`transmask.training.adaprune` (same masks; the kept weights of each
  layer re-fitted with Adam, ``--steps`` steps per layer, to reproduce the dense
  layer's output on 256 calibration training images, sequentially, 20 % of them held
  out to early-stop the fit and keep it only where it beats magnitude pruning; then
  BN re-estimated).

Accuracy is top-1 on the test split, mean +- std over ``--seeds`` dense models.

Writes ``fig5_adaprune.png``, ``.csv`` (one row per seed, pattern and method) and
``.json`` (summary, per-layer AdaPrune reports of the first seed, config).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _common import plt  # noqa: E402

NAME = "fig5_adaprune"
CONFIGS = [(2, 4, False), (2, 4, True), (4, 8, False), (4, 8, True)]
METHODS = ("magnitude", "magnitude + BN", "AdaPrune")
HOLDOUT = 0.2  # calibration images kept out of AdaPrune's fits to check them (early stopping, fit or magnitude)
METHOD_COLORS = {"magnitude": "#bdbdbd", "magnitude + BN": "#7570b3", "AdaPrune": "#d95f02"}


def label(n, m, transposable):
    return f"{n}:{m}" + ("-T" if transposable else "")


def main(argv=None) -> dict:
    ap = C.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="dense models (seeds) (default 3)")
    ap.add_argument("--steps", type=int, default=1000, help="AdaPrune Adam steps per layer (default 1000, the paper's)")
    ap.add_argument("--epochs", type=int, default=20, help="dense training epochs (default 20)")
    ap.add_argument("--channels", default="8,16", help="DigitsCNN channels (default 8,16)")
    args = ap.parse_args(argv)
    out = C.out_dir(args)
    import torch

    from transmask.training import adaprune, magnitude_prune
    from transmask.training.data import DigitsCNN, evaluate, load_digits_tensors, train

    torch.set_num_threads(1)
    channels = tuple(int(c) for c in args.channels.split(","))
    seeds = 1 if args.quick else args.seeds
    epochs = 2 if args.quick else args.epochs
    steps = 20 if args.quick else args.steps
    configs = CONFIGS[:2] if args.quick else CONFIGS
    data = load_digits_tensors(seed=0, images=True)
    prune_kw = dict(skip_first=True, skip_last=True, method="exact")
    rows, reports = [], {}
    with C.Timer() as t:
        for seed in range(args.seed, args.seed + seeds):
            model = DigitsCNN(channels=channels, seed=seed)
            train(model, data.x_train, data.y_train, epochs=epochs, seed=seed)
            dense_acc = evaluate(model, data.x_test, data.y_test)
            rows.append({"seed": seed, "pattern": "dense", "transposable": None, "method": "dense",
                         "test_acc": dense_acc, "seconds": 0.0})
            for n, m, tr in configs:
                lab = label(n, m, tr)
                t0 = time.perf_counter()
                mag = magnitude_prune(model, n, m, transposable=tr, **prune_kw)
                acc_mag = evaluate(mag, data.x_test, data.y_test)
                t1 = time.perf_counter()
                magbn = magnitude_prune(model, n, m, transposable=tr, bn_data=data.x_calib, **prune_kw)
                acc_magbn = evaluate(magbn, data.x_test, data.y_test)
                t2 = time.perf_counter()
                res = adaprune(model, data.x_calib, n, m, transposable=tr, fit="adam", steps=steps,
                               holdout=HOLDOUT, seed=seed, progress=False, **prune_kw)
                acc_ada = evaluate(res.model, data.x_test, data.y_test)
                t3 = time.perf_counter()
                for meth, acc, sec in (("magnitude", acc_mag, t1 - t0), ("magnitude + BN", acc_magbn, t2 - t1),
                                       ("AdaPrune", acc_ada, t3 - t2)):
                    rows.append({"seed": seed, "pattern": lab, "transposable": tr, "method": meth,
                                 "test_acc": acc, "seconds": sec})
                if seed == args.seed:
                    reports[lab] = [r.as_dict() for r in res.layers]
                print(f"[{time.perf_counter() - t.t0:6.1f}s] seed {seed} {lab:<6} dense {dense_acc:.4f} "
                      f"magnitude {acc_mag:.4f} +BN {acc_magbn:.4f} AdaPrune {acc_ada:.4f} ({t3 - t2:.1f}s)",
                      flush=True)
    summary = []
    for lab in ["dense"] + [label(*c) for c in configs]:
        for meth in (("dense",) if lab == "dense" else METHODS):
            accs = np.array([r["test_acc"] for r in rows if r["pattern"] == lab and r["method"] == meth]) * 100
            summary.append({"pattern": lab, "method": meth, "acc_mean": float(accs.mean()),
                            "acc_std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0, "seeds": int(len(accs))})
    cfg = {"model": f"DigitsCNN{channels}", "epochs": epochs, "seeds": seeds, "adaprune_steps": steps,
           "adaprune_fit": "adam", "adaprune_holdout": HOLDOUT, "calibration_images": int(len(data.x_calib)), "mask_method": "exact",
           "sparse_layers": "features.3, features.7 (first conv and classifier dense)",
           "machine": C.short_machine(), "quick": args.quick}
    C.save_csv(rows, out, NAME)
    C.save_json({"config": cfg, "summary": summary, "runs": rows, "adaprune_layers_first_seed": reports,
                 "machine": C.machine(), "seconds": t.s}, out, NAME)
    plot(summary, cfg, out)
    get = {(s["pattern"], s["method"]): s for s in summary}
    caption = (f"AdaPrune on {cfg['model']} / sklearn digits, {seeds} seeds, {steps} Adam steps per layer on "
               f"{cfg['calibration_images']} calibration images. Dense {get[('dense', 'dense')]['acc_mean']:.2f}%; "
               + "; ".join(f"{lab}: magnitude {get[(lab, 'magnitude')]['acc_mean']:.1f}%, +BN "
                           f"{get[(lab, 'magnitude + BN')]['acc_mean']:.1f}%, AdaPrune {get[(lab, 'AdaPrune')]['acc_mean']:.1f}%"
                           for lab in [label(*c) for c in configs])
               + f". Run time {t.s:.0f} s on CPU.")
    print(caption)
    return C.result(NAME, out, caption, t.s)


def plot(summary, cfg, out):
    pats = [s["pattern"] for s in summary if s["method"] == "magnitude"]
    dense = next(s for s in summary if s["method"] == "dense")
    fig, ax = plt.subplots(figsize=(8.6, 4.8))
    width = 0.26
    x = np.arange(len(pats))
    for k, meth in enumerate(METHODS):
        ss = [next(s for s in summary if s["pattern"] == p and s["method"] == meth) for p in pats]
        pos = x + (k - 1) * width
        ax.bar(pos, [s["acc_mean"] for s in ss], width, yerr=[s["acc_std"] for s in ss], capsize=3,
               color=METHOD_COLORS[meth], label=meth, edgecolor="k", lw=0.5)
        for xi, s in zip(pos, ss):
            ax.text(xi, s["acc_mean"] + s["acc_std"] + 0.8, f"{s['acc_mean']:.1f}", ha="center", fontsize=7.5)
    ax.axhline(dense["acc_mean"], color=C.COLORS["dense"], ls="--", lw=1,
               label=f"dense {dense['acc_mean']:.1f} ± {dense['acc_std']:.1f} %")
    ax.set_xticks(x, [p.replace("-T", "\ntransposable") if p.endswith("-T") else p + "\nrow-wise" for p in pats])
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_xlabel("N:M pattern of the two inner conv layers (50% sparse)")
    ax.set_ylim(0, 119)
    ax.set_title(f"Post-training conversion to N:M: magnitude pruning vs AdaPrune\n{cfg['model']} on sklearn digits, "
                 f"{cfg['seeds']} seeds, {cfg['adaprune_steps']} Adam steps/layer, "
                 f"{cfg['calibration_images']} calibration images", fontsize=10.5)
    ax.legend(loc="upper center", ncol=4, fontsize=8)
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    return C.save_fig(fig, out, NAME)


if __name__ == "__main__":
    main()
