"""Small, download-free data and models for tests, examples and figures.

scikit-learn's *digits* dataset (1797 8x8 grey images of the digits 0-9, shipped
with scikit-learn) with a small MLP and a small CNN whose layer sizes are
multiples of 8, so 2:4 and 4:8 tiles fit (only the 10-class output layer has a
tile cut by the matrix edge). Plus a plain :func:`train` loop and
:func:`evaluate`. Everything is seeded and runs in seconds on a CPU.

>>> from transmask.training.data import load_digits_tensors, DigitsMLP, train, evaluate
>>> data = load_digits_tensors(seed=0)
>>> model = DigitsMLP(seed=0)
>>> _ = train(model, data.x_train, data.y_train, epochs=2, seed=0)
>>> evaluate(model, data.x_test, data.y_test) > 0.5
True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._optional import require

torch = require("torch", "transmask.training.data")
nn = torch.nn
F = torch.nn.functional

__all__ = ["DigitsData", "load_digits_tensors", "DigitsMLP", "DigitsCNN", "train", "evaluate", "predict_logits"]


@dataclass
class DigitsData:
    """Train / calibration / test split of the digits dataset as float32/int64 tensors.

    ``x_*`` are scaled to [0, 1]; shape ``(N, 64)`` or ``(N, 1, 8, 8)`` with
    ``images=True``. ``x_calib`` is a subset of the training images (for AdaPrune
    and BatchNorm re-estimation); the test split is never used for fitting.
    """

    x_train: "torch.Tensor"
    y_train: "torch.Tensor"
    x_test: "torch.Tensor"
    y_test: "torch.Tensor"
    x_calib: "torch.Tensor"
    y_calib: "torch.Tensor"


def load_digits_tensors(seed: int = 0, test_fraction: float = 0.3, calib_size: int = 256, images: bool = False) -> DigitsData:
    """Load scikit-learn's digits (no download) as a seeded, stratified train/test split.

    Parameters
    ----------
    seed : int
        Seed of the split and of the calibration subset.
    test_fraction : float
        Fraction held out for testing (default 0.3: 1257 train, 540 test).
    calib_size : int
        Number of training images in ``x_calib``.
    images : bool
        Return ``(N, 1, 8, 8)`` images (for :class:`DigitsCNN`) instead of ``(N, 64)``.
    """
    try:  # scikit-learn ships the dataset (no download)
        from sklearn import datasets, model_selection as selection
    except ImportError as exc:
        raise ImportError("load_digits_tensors needs the optional dependency scikit-learn, which is not "
                          "installed; pip install scikit-learn") from exc
    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    Xtr, Xte, ytr, yte = selection.train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)
    calib = np.sort(rng.choice(len(Xtr), size=min(calib_size, len(Xtr)), replace=False))

    def t(a):
        a = torch.from_numpy(np.ascontiguousarray(a))
        return a.reshape(-1, 1, 8, 8) if images else a

    def lab(a):
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    return DigitsData(t(Xtr), lab(ytr), t(Xte), lab(yte), t(Xtr[calib]), lab(ytr[calib]))


class DigitsMLP(nn.Module):
    """MLP 64 -> hidden... -> 10 with ReLU (default hidden ``(256, 128)``).

    Layers are ``self.layers[i]`` (nn.Linear), named ``layers.0``, ``layers.2``, ...
    """

    def __init__(self, hidden=(256, 128), seed: int | None = 0, batchnorm: bool = False):
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        sizes = [64, *hidden]
        mods: list = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            mods.append(nn.Linear(a, b))
            if batchnorm:
                mods.append(nn.BatchNorm1d(b))
            mods.append(nn.ReLU())
        mods.append(nn.Linear(sizes[-1], 10))
        self.layers = nn.Sequential(*mods)

    def forward(self, x):
        return self.layers(x.reshape(x.shape[0], -1))


class DigitsCNN(nn.Module):
    """Small CNN for 1x8x8 digits: conv(1->c1) BN ReLU, conv(c1->c2) BN ReLU, maxpool 2,
    conv(c2->c2) BN ReLU, global average pool, Linear(c2 -> 10).

    The first conv has only 9 inputs per output (1 channel, 3x3); it is the usual
    layer to keep dense (``skip_first=True``).
    """

    def __init__(self, channels=(16, 32), seed: int | None = 0):
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(c2, 10)

    def forward(self, x):
        if x.ndim == 2:
            x = x.reshape(-1, 1, 8, 8)
        return self.classifier(torch.flatten(self.features(x), 1))


def _progress(iterable, enabled: bool, **kw):
    if not enabled:
        return iterable
    tqdm = require("tqdm", "progress bars").tqdm
    return tqdm(iterable, **kw)


def train(
    model,
    x,
    y,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    controller=None,
    optimizer=None,
    progress: bool = False,
) -> list[float]:
    """Train ``model`` with Adam and cross-entropy on ``(x, y)``; return the mean loss per epoch.

    Parameters
    ----------
    controller : MaskController, optional
        The object returned by :func:`transmask.training.sparsify`; its ``step()``
        is called after every optimizer step, so masks are recomputed on schedule.
    optimizer : torch.optim.Optimizer, optional
        Default: ``Adam(model.parameters(), lr, weight_decay=weight_decay)``.
    progress : bool
        Show a tqdm bar over epochs.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    losses = []
    bar = _progress(range(epochs), progress, desc="train", unit="epoch")
    for _ in bar:
        perm = torch.randperm(len(x), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if controller is not None:
                controller.step()
            total += loss.item() * len(idx)
            count += len(idx)
        losses.append(total / count)
        if progress:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return losses


@torch.no_grad()
def predict_logits(model, x, batch_size: int = 1024):
    """Logits of ``model`` (in eval mode) on ``x``, batched."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def evaluate(model, x, y, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``(x, y)``."""
    return float((predict_logits(model, x, batch_size).argmax(1) == y).float().mean())
