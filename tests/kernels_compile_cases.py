"""Compile the N:M kernel for sm_80 (A100) and sm_90 (H100) with ``triton.compile``, no GPU needed.

The interpreter accepts programs the GPU compiler rejects (e.g. ``tl.dot`` with a
dimension below 16, layouts that do not lower, too much shared memory), so every
kernel variant is compiled through the full pipeline (TTIR -> TTGIR -> LLVM ->
PTX -> cubin with the ptxas bundled in the triton wheel) for real targets.

Run by ``tests/test_kernels.py`` in a subprocess with ``TRITON_INTERPRET`` unset
and a fresh ``TRITON_CACHE_DIR`` (so nothing is served from an old cache).
Directly::

    python -m pytest tests/kernels_compile_cases.py
    TRANSMASK_COMPILE_ALL_CONFIGS=1 python -m pytest tests/kernels_compile_cases.py   # + every autotune config
"""
from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    pytest.skip("compile checks need the real Triton JIT (unset TRITON_INTERPRET)", allow_module_level=True)

import transmask.kernels as tk  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

TARGETS = {"sm80": GPUTarget("cuda", 80, 32), "sm90": GPUTarget("cuda", 90, 32)}
# every dtype (fp32 in both tf32 and exact ieee), every supported m, an n that is not a power of two
VARIANTS = [
    ("fp16", 2, 4, "tf32"),
    ("bf16", 2, 4, "tf32"),
    ("fp32", 2, 4, "tf32"),
    ("fp32", 2, 4, "ieee"),
    ("fp16", 1, 2, "tf32"),
    ("fp16", 3, 8, "tf32"),
    ("fp16", 8, 16, "tf32"),
    ("bf16", 16, 32, "tf32"),
]
CONFIGS = tk.kernel_configs()
# smallest (GEMV-like) and largest tensor-core tile always; all of them on request
CHECKED = CONFIGS if os.environ.get("TRANSMASK_COMPILE_ALL_CONFIGS") == "1" else [CONFIGS[0], CONFIGS[-1]]


def _compile(target, dtype, n, m, precision, config):
    ck = tk.compile_kernel(target, dtype, n, m, config=config, input_precision=precision)
    assert ck.asm["cubin"], "no cubin produced"
    assert ".target sm_%d" % target.arch in ck.asm["ptx"]
    # every config must fit the smallest of the two GPUs' shared memory (A100: 163 KiB per block)
    assert ck.metadata.shared <= 163 * 1024
    return ck


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("dtype,n,m,precision", VARIANTS)
def test_compile_variants(target, dtype, n, m, precision):
    _compile(TARGETS[target], dtype, n, m, precision, CONFIGS[0])


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("config", CHECKED, ids=lambda c: "T{BLOCK_T}_R{BLOCK_R}_K{BLOCK_K}".format(**c.kwargs))
def test_compile_autotune_configs(target, config):
    ck = _compile(TARGETS[target], "fp16", 2, 4, "tf32", config)
    if target == "sm90" and config.kwargs["BLOCK_T"] >= 64:
        # large tiles should reach Hopper's warpgroup MMA, not fall back to mma.sync
        assert "wgmma" in ck.asm["ptx"]
