"""Calls from several Python threads, in either import order of torch and transmask (issue 18 #1).

With torch imported first, transmask uses Numba's workqueue pool (OpenMP would share torch's
spinning libgomp), which aborts the process on concurrent use; every call into a parallel kernel
then holds ``transmask._threads.KERNEL_LOCK``. Measured on the 2-core dev machine: 32 exact 2:4
masks of a 2048^2 float64 matrix took 0.57 s one after the other and 0.55 s from 4 threads (torch
first, workqueue + lock), 0.57 s and 0.59 s with transmask first (OpenMP, no lock).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

REPRO = """
import sys
if sys.argv[1] == "torch_first":
    import torch
import numpy as np, transmask as tm, numba
from concurrent.futures import ThreadPoolExecutor
W = np.random.default_rng(0).random((2048, 2048))
calls = [lambda: tm.optimal_mask(W, 2, 4), lambda: tm.optimal_mask(W, 4, 8, method="approx"),
         lambda: tm.nm_mask(W, 2, 4), lambda: tm.is_transposable(tm.optimal_mask(W[:256, :256], 2, 4), 2, 4)]
want = [f() for f in calls]
with ThreadPoolExecutor(4) as pool:
    got = list(pool.map(lambda k: calls[k % 4](), range(32)))
ok = all(__import__("numpy").array_equal(g, want[k % 4]) for k, g in enumerate(got))
print(numba.threading_layer(), ok)
"""


@pytest.mark.parametrize("order", ["torch_first", "transmask_first"])
def test_threaded_callers_get_identical_masks_in_either_import_order(order):
    pytest.importorskip("torch")
    res = subprocess.run([sys.executable, "-c", REPRO, order], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    layer, ok = res.stdout.split()
    assert ok == "True"
    if order == "torch_first":
        assert layer == "workqueue"  # the torch/libgomp workaround stays in place


def test_kernel_guard_locks_only_the_workqueue_layer():
    code = ("import numpy as np, transmask as tm, numba; from transmask import _threads as t; "
            "tm.nm_mask(np.ones((4, 4)), 2, 4); print(numba.threading_layer(), t.kernel_guard() is t.KERNEL_LOCK)")
    for layer in ("workqueue", "omp"):
        env = dict(__import__("os").environ, NUMBA_THREADING_LAYER=layer)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout.split()
        assert out == [layer, str(layer == "workqueue")]
