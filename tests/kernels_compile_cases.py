"""Compile the N:M kernels for sm_80 (A100) and sm_90 (H100) with ``triton.compile``, no GPU needed.

The interpreter accepts programs the GPU compiler rejects (``tl.dot`` with a dimension below
16, layouts that do not lower, too much shared memory), so the kernels are compiled through
the full pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin with the ptxas in the triton wheel).
What is compiled is what the runtime launches: :mod:`transmask.kernels.compiled` rebuilds
the specialisations with Triton's own binder from stand-ins of the real arguments and the
autotuner's pruned configurations. The few-token kernel is also held to its budget: no
spills, a branch-free main loop, <= 0.3 warp instructions per dense weight (SASS).

Run by ``tests/test_kernels.py`` in a subprocess with ``TRITON_INTERPRET`` unset and a fresh
``TRITON_CACHE_DIR`` (so nothing is served from an old cache). Directly::

    python -m pytest tests/kernels_compile_cases.py
    TRANSMASK_COMPILE_ALL_CONFIGS=1 python -m pytest tests/kernels_compile_cases.py   # + every config, both targets

``bench/kernel_sass.py`` prints the full table.
"""
from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    pytest.skip("compile checks need the real Triton JIT (unset TRITON_INTERPRET)", allow_module_level=True)

import torch  # noqa: E402

import transmask.kernels as tk  # noqa: E402
from transmask.kernels import compiled as C  # noqa: E402
from transmask.kernels import nm_kernel as nk  # noqa: E402

ALL = os.environ.get("TRANSMASK_COMPILE_ALL_CONFIGS") == "1"
SHAPE = (4096, 11008)  # LLaMA-7B MLP up-projection (out_features, in_features)
BUDGET = 0.3  # warp instructions per dense weight in the few-token main loop


def _stats(spec, arch):
    ck = C.compile_specialisation(spec, arch)
    assert ck.asm["cubin"], "no cubin produced"
    assert f".target sm_{arch}" in ck.asm["ptx"]
    assert ck.metadata.shared <= 163 * 1024  # fits the smaller of the two GPUs (A100: 163 KiB per block)
    return ck, C.code_stats(ck, arch, spec.weights_per_iter, spec.num_warps)


def _no_spills(st):
    assert st["spill_stores"] == 0 and st["spill_loads"] == 0 and st["local_memory_ops"] == 0, st


def test_plan_routes_products_as_documented():
    assert C.runtime_plan(4096, 4096, 16) == {"fwd": "triton", "bwd": "triton", "dw": "triton", "convert": []}
    assert C.runtime_plan(4096, 4096, 4096)["fwd"] == "hw 2:4"
    assert C.runtime_plan(4096, 4096, 4096, n=4, m=8) == {"fwd": "dense", "bwd": "dense", "dw": "triton",
                                                          "convert": ["decompress"]}


@pytest.mark.parametrize("op", ["fwd", "bwd"])
def test_few_token_specialisations_meet_the_budget(op):
    """The specialisations T=16 fp16 2:4 runs on an H100: no spills, <= 0.3 warp instructions per weight."""
    specs = C.runtime_specialisations(*SHAPE, 16, torch.float16, 2, 4, op=op, arch=90)
    # the runtime's choice, not the most general variant: 16-token tiles, split-K for 132 SMs,
    # unmasked tiles, the word path, unit strides folded to constants, 16-divisible pointers/strides
    assert {s.config["BLOCK_T"] for s in specs} == {16}
    assert len(specs) == 3 and len({s.name for s in specs}) == 3
    names = [p.name for p in specs[0].fn.params]
    for s in specs:
        ce = {names[k[0]]: v for k, v in s.constexprs.items()}
        assert ce["EVEN_R"] and ce["EVEN_K"] and ce["WORD_PATH"] and ce["TRANS_W"] == (op == "bwd")
        assert ce["stride_ak"] == 1 and ce["stride_yc"] == 1
        hinted = {names[k[0]] for k, v in s.attrs.items() if ["tt.divisibility", 16] in v}
        # (the index rows, 344 words, are 32-bit aligned only: no hint, a little more load work)
        assert {"v_ptr", "i_ptr", "a_ptr", "y_ptr", "stride_vr", "stride_at"} <= hinted
        assert 2 <= s.split <= nk.SPLIT_MAX
    for s in specs:
        ck, st = _stats(s, 90)
        _no_spills(st)
        assert st["branches"] == 0, "main loop must be straight-line for the per-iteration count to hold"
        assert "wgmma" in ck.asm["ptx"]  # Hopper MMA with the expanded tile as the register operand
        assert st["warp_instr_per_weight"] <= BUDGET, (s.name, st)


def test_single_token_is_its_own_specialisation():
    spec = C.runtime_specialisations(*SHAPE, 1, torch.float16, 2, 4, op="fwd", arch=90)[0]
    names = [p.name for p in spec.fn.params]
    assert {names[k[0]]: v for k, v in spec.constexprs.items()}["T"] == 1
    _, st = _stats(spec, 90)
    _no_spills(st)
    assert st["warp_instr_per_weight"] <= BUDGET


@pytest.mark.parametrize("T", [16, 4096])
def test_weight_gradient_and_conversions_compile_without_spills(T):
    ops = ["dw"] + C.runtime_plan(*SHAPE, T)["convert"]
    for op in ops:
        for s in C.runtime_specialisations(*SHAPE, T, torch.float16, 2, 4, op=op, arch=90)[: None if ALL else 1]:
            _, st = _stats(s, 90)
            _no_spills(st)


# every dtype (fp32 in tf32 and exact ieee), both expansion paths, an n that is not a power of two;
# one configuration each, both targets
# K = 1536 keeps value rows 16-element aligned, K = 1544 does not (the fallback config); R = 1000
# cuts the last row tile; 24 tokens take the 32-token tiles; each variant on one target (CI time)
VARIANTS = [
    ("bfloat16", 2, 4, "fwd", 1536, 80),
    ("bfloat16", 2, 4, "bwd", 1544, 90),
    ("float32", 2, 4, "bwd", 1536, 80),
    ("float16", 1, 2, "fwd", 1544, 90),
    ("float16", 3, 8, "bwd", 1544, 80),
    ("float16", 4, 8, "fwd", 1536, 90),
    ("float16", 8, 16, "bwd", 1536, 80),
    ("bfloat16", 16, 32, "fwd", 1544, 90),
    ("bfloat16", 16, 32, "bwd", 1544, 80),
]


@pytest.mark.parametrize("dtype,n,m,op,K,arch", VARIANTS)
def test_compile_variants(dtype, n, m, op, K, arch):
    specs = C.runtime_specialisations(1000, K, 24, getattr(torch, dtype), n, m, op=op, arch=arch)
    group = "slot" if not tk.word_path(getattr(torch, dtype), n, m) else (
        "word_unaligned" if (-(-K // m) * n) % 16 else "word")
    assert [s.config for s in specs] == [c.kwargs for c in nk._GROUPS[group][32]]
    _, st = _stats(specs[0], arch)
    _no_spills(st)


@pytest.mark.parametrize("arch", [80, 90])
def test_fp32_tf32_compiles(arch):
    # fp32 follows torch's matmul rule: exact ("ieee", the VARIANTS above) unless TF32 is allowed
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        spec = C.runtime_specialisations(256, 512, 8, torch.float32, 2, 4, op="fwd", arch=arch)[0]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    names = [p.name for p in spec.fn.params]
    assert {names[k[0]]: v for k, v in spec.constexprs.items()}["INPUT_PRECISION"] == "tf32"
    _, st = _stats(spec, arch)
    _no_spills(st)


if ALL:  # every autotune config on both targets (slow; bench/kernel_sass.py --all-configs prints them)
    @pytest.mark.parametrize("arch", [80, 90])
    @pytest.mark.parametrize("T", [16, 32, 4096])
    def test_every_config_without_spills(arch, T):
        for op in ("fwd", "bwd", "dw"):
            for s in C.runtime_specialisations(*SHAPE, T, torch.float16, 2, 4, op=op, arch=arch):
                ck, st = _stats(s, arch)
                _no_spills(st)
                if op != "dw" and T <= tk.SMALL_T:
                    assert st["warp_instr_per_weight"] <= BUDGET, (s.name, st)
                if arch == 90 and op != "dw" and s.config["BLOCK_T"] >= 64:
                    assert "wgmma" in ck.asm["ptx"]
