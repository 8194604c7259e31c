"""Compile the device solver's kernels for sm_80 (A100) and sm_90 (H100/H200) with ``triton.compile``, no GPU needed.

The interpreter accepts programs the GPU compiler rejects (layouts that do not lower, unsupported
dtypes in ``tl.dot``, too many registers), so the default launch configuration of every kernel
family is compiled through the full pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin). Run by
``tests/test_gpu_solver.py`` in a subprocess with ``TRITON_INTERPRET`` unset and a fresh
``TRITON_CACHE_DIR``. Directly::

    python -m pytest tests/gpu_solver_compile_cases.py
"""
from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    pytest.skip("compile checks need the real Triton JIT (unset TRITON_INTERPRET)", allow_module_level=True)

pytest.importorskip("torch")
pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402

from transmask.solvers.gpu import _kernels  # noqa: E402

TARGETS = {"sm80": GPUTarget("cuda", 80, 32), "sm90": GPUTarget("cuda", 90, 32)}
# (kernel, n, m, keep, input dtype, target, aligned): every tile size of the flow kernel, both counting
# modes, every input dtype, a non-power-of-two m, the pattern kernel for 2:4 and 1:4 (and float64's
# tl.dot), and the general specialisation (odd sizes and strides) next to the aligned one
VARIANTS = [
    ("pattern", 2, 4, "exactly", "fp32", "sm90", True),
    ("pattern", 1, 4, "exactly", "fp16", "sm80", False),
    ("pattern", 2, 4, "exactly", "fp64", "sm80", True),
    ("flow", 2, 4, "at_most", "bf16", "sm80", False),
    ("flow", 4, 8, "exactly", "fp16", "sm90", True),
    ("flow", 8, 16, "exactly", "fp32", "sm90", True),
    ("flow", 8, 16, "at_most", "fp32", "sm80", False),
    ("flow", 16, 32, "exactly", "bf16", "sm90", True),
    ("flow", 3, 5, "exactly", "fp64", "sm90", False),
]


@pytest.mark.parametrize("kernel,n,m,keep,dtype,target,aligned", VARIANTS, ids=lambda v: str(v))
def test_compiles(kernel, n, m, keep, dtype, target, aligned):
    ck = _kernels.compile_for(TARGETS[target], kernel, n, m, keep, dtype, aligned=aligned)
    assert ck.asm["cubin"], "no cubin produced"
    assert ".target sm_%d" % TARGETS[target].arch in ck.asm["ptx"]
    assert ck.metadata.shared <= 163 * 1024  # A100's shared memory per block
    if kernel == "pattern" and dtype != "fp64":
        # the pattern scores must be exact float32 sums: FMA, never tf32 tensor cores
        assert "mma" not in ck.asm["ptx"], "pattern product lowered to tensor cores (tf32 would round the scores)"
