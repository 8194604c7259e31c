"""One rank of tests/test_ddp.py: sparse training under DistributedDataParallel (gloo, CPU).

Run by ``torch.multiprocessing.spawn``; rank 0 writes what it measured to ``<folder>/ddp_rank0.json``
and every rank checks, after all_gather, that the masks agree everywhere.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

STEPS = 8
UPDATE_EVERY = 2


def _model(seed: int):
    import torch

    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8))


def _train(ddp, rank: int, steps: int, ctl=None) -> Counter:
    """``steps`` SGD steps on this rank's own data (different on every rank); the collectives run
    during them, counted with the profiler (c10d ops: gloo:all_reduce, gloo:broadcast, ...)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(100 + rank)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5, momentum=0.9)
    if ctl is not None:
        ctl.attach(opt)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            x = torch.randn(16, 16, generator=gen)
            opt.zero_grad()
            ddp(x).pow(2).mean().backward()
            opt.step()
    return Counter(e.name for e in prof.events() if e.name.startswith("gloo:"))


def _gathered(tensor):
    import torch
    import torch.distributed as dist

    out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor)
    return out


def _all_masks(model):
    import torch

    import transmask.training as tt

    return torch.cat([layer.mask.reshape(-1) for layer in tt.masked_layers(model).values()]).to(torch.uint8)


def worker(rank: int, world: int, folder: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import transmask.training as tt

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        report = {}
        # dense reference: what DDP communicates without transmask
        dense = DDP(_model(seed=0))
        report["dense"] = dict(_train(dense, rank, STEPS))
        report["dense_buckets"] = dense._get_ddp_logging_data().get("bucket_sizes")

        # A: every rank seeded alike, sparsify, then DDP
        model = _model(seed=0)
        ctl = tt.sparsify(model, 2, 4, update_every=UPDATE_EVERY)
        start = _all_masks(model)
        ddp = DDP(model)
        assert not any(name.endswith("mask") for name, _ in ddp.named_parameters())
        assert sum(name.endswith("mask") for name, _ in ddp.named_buffers()) == 3
        report["sparse"] = dict(_train(ddp, rank, STEPS, ctl))
        report["sparse_buckets"] = ddp._get_ddp_logging_data().get("bucket_sizes")
        report["updates"] = len(ctl.history)
        report["changed"] = int((_all_masks(model) != start).sum())
        masks = _gathered(_all_masks(model))
        weights = _gathered(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        assert all(torch.equal(masks[0], m) for m in masks), "masks differ between ranks"
        assert all(torch.equal(weights[0], w) for w in weights), "weights differ between ranks"
        assert ctl.all_valid()
        report["mask_checksums"] = [int(m.to(torch.int64).mul(torch.arange(1, m.numel() + 1)).sum()) for m in masks]

        # B: ranks start from different weights; DDP copies rank 0's, then sparsify its module
        model_b = _model(seed=rank)
        ddp_b = DDP(model_b)
        ctl_b = tt.sparsify(ddp_b.module, 2, 4, update_every=UPDATE_EVERY)
        first = _gathered(_all_masks(model_b))
        assert all(torch.equal(first[0], m) for m in first), "initial masks differ between ranks"
        report["sparse_after_ddp"] = dict(_train(ddp_b, rank, STEPS, ctl_b))
        masks_b = _gathered(_all_masks(model_b))
        assert all(torch.equal(masks_b[0], m) for m in masks_b), "masks differ between ranks (B)"
        if rank == 0:
            Path(folder, "ddp_rank0.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()
    # Every check above passed. Leave without running C++ static destructors: in about one run of three the
    # process then aborted in teardown ("terminate called without an active exception", SIGABRT from a thread
    # with no Python frame after the work was done), which spawn reports as a failed rank.
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
