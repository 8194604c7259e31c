"""Random weight matrices for the benches and the paper figures (one generator, so both time the same inputs)."""
from __future__ import annotations

import numpy as np

#: Weight distributions: name -> description.
DISTS = {"gaussian": "Gaussian N(0,1)", "student_t": "Student-t, 3 d.o.f. (heavy-tailed)"}


def make_weights(shape, dist: str, seed: int) -> np.ndarray:
    """A float32 matrix of ``shape`` (an int for a square one): standard Gaussian or Student-t with df=3."""
    shape = (shape, shape) if isinstance(shape, (int, np.integer)) else tuple(shape)
    rng = np.random.default_rng(seed)
    if dist == "gaussian":
        return rng.standard_normal(shape, dtype=np.float32)
    if dist == "student_t":
        return rng.standard_t(3, shape).astype(np.float32)
    raise ValueError(f"unknown distribution {dist!r}; choose from {sorted(DISTS)}")
