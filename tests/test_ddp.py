"""sparsify under DistributedDataParallel (issue 14): 2 CPU processes, gloo backend.

What is checked, and how:

- masks agree on every rank after several mask updates: each rank trains on its own data,
  the masks (and weights) of all ranks are compared with ``all_gather``;
- no extra communication: the collectives DDP runs during the training steps are counted
  with ``torch.profiler`` (its ``gloo:all_reduce`` / ``gloo:broadcast`` events) and must equal
  those of the same dense model (same gradient buckets, no buffer broadcasts for the masks,
  which are buffers, not parameters, and are kept out of DDP's buffer broadcasts);
- the same when the ranks start from different weights, DDP is built first (copying rank 0's
  weights) and ``sparsify`` is applied to ``ddp.module``.
"""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

import _ddp_worker  # noqa: E402


def test_sparsify_under_ddp(tmp_path):
    assert dist.is_available() and dist.is_gloo_available()
    torch.multiprocessing.spawn(_ddp_worker.worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    report = json.loads((tmp_path / "ddp_rank0.json").read_text())
    print(report)
    steps = _ddp_worker.STEPS
    assert report["updates"] == steps // _ddp_worker.UPDATE_EVERY and report["changed"] > 0
    assert len(set(report["mask_checksums"])) == 1
    assert report["dense"]["gloo:all_reduce"] == steps  # one gradient bucket per step
    assert report["sparse"] == report["dense"] == report["sparse_after_ddp"]
    assert report["sparse_buckets"] == report["dense_buckets"]
