"""What the compiler makes of the kernels: the runtime's specialisations, compiled for a GPU without one.

The Triton JIT specialises every launch on its arguments (an integer equal to 1 becomes a
constant, integers and pointers divisible by 16 get a divisibility hint that enables
128-bit loads) and the autotuner picks among the configurations its pruning keeps. The
code that runs is therefore not "the kernel" but those specialisations, and this module
rebuilds them with Triton's own binder from CPU stand-ins of the real arguments
(:func:`runtime_specialisations`), compiles them for a target such as
``GPUTarget("cuda", 90, 32)`` (:func:`compile_specialisation`) and reads the result
(:func:`code_stats`): registers, spills and stack from ``ptxas -v``, shared memory, and from
the SASS (disassembled with the ``nvdisasm`` that ships in the triton wheel) the instructions
of the main loop, per warp and per dense weight the loop body covers.

"Warp instructions per weight" = (SASS instructions in the main-loop body) x (warps) /
(dense weights one iteration expands). It is an issue-slot count: an SM issues at most 4 warp
instructions per cycle, so at 0.25 per weight an H100 (132 SMs at ~1.75 GHz) can expand at
most ~3.7e12 weights/s, i.e. 12 us for a 4096 x 11008 matrix. Instructions predicated off
still issue and are counted; the loop must be straight-line (checked: ``branches``).

Used by ``tests/kernels_compile_cases.py`` (spills, instruction budget, that the compiled
configurations are the runtime's) and ``bench/kernel_sass.py`` (the table).
"""
from __future__ import annotations

import collections
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field

import torch
import triton

from . import nm_kernel as nk

__all__ = ["Specialisation", "runtime_plan", "runtime_specialisations", "compile_specialisation", "code_stats",
           "SASS_TOOLS"]

_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")

#: nvdisasm and ptxas from the triton wheel (None when absent).
SASS_TOOLS = {name: (os.path.join(_BIN, name) if os.path.exists(os.path.join(_BIN, name)) else None)
              for name in ("nvdisasm", "ptxas")}


@dataclass
class Specialisation:
    """One compiled variant of a kernel as the runtime would launch it."""

    kernel: str
    fn: object  # the triton JITFunction
    signature: dict
    constexprs: dict
    attrs: dict
    num_warps: int
    num_stages: int
    config: dict = field(default_factory=dict)  # the autotuning config's block sizes
    split: int = 1  # split-K factor the runtime would use with this config
    weights_per_iter: int = 0  # dense weights one main-loop iteration expands

    @property
    def name(self) -> str:
        blocks = "_".join(f"{k[6:]}{v}" for k, v in self.config.items() if k in ("BLOCK_T", "BLOCK_R", "BLOCK_K"))
        return f"{blocks}_w{self.num_warps}_s{self.num_stages}" + (f"_split{self.split}" if self.split > 1 else "")


def _bind(fn, args: list, kwargs: dict, target) -> tuple:
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, options = binder(*args, **kwargs)
    _, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, options)
    return signature, constexprs, attrs


def _target(arch: int):
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", arch, 32)


def runtime_plan(R: int, K: int, T: int, dtype=torch.float16, n: int = 2, m: int = 4) -> dict:
    """Which backend runs each product of a training step on a GPU with the hardware 2:4 path.

    :func:`transmask.kernels.autograd.step_backends` with the hardware path assumed available
    for 2:4 fp16/bf16 weights whose dimensions are multiples of 64.
    """
    from .autograd import step_backends

    hw_ok = (n, m) == (2, 4) and dtype in (torch.float16, torch.bfloat16) and R % 64 == 0 and K % 64 == 0
    return step_backends(T, dtype, n, m, hw_ok)


def runtime_specialisations(R: int, K: int, T: int, dtype=torch.float16, n: int = 2, m: int = 4,
                            op: str = "fwd", arch: int = 90, sms: int = nk.DEFAULT_SMS) -> list[Specialisation]:
    """The kernel specialisations a launch of ``op`` would compile, one per autotuning candidate.

    Parameters
    ----------
    R, K : int
        Weight shape ``(out_features, in_features)``, compressed along ``K``.
    T : int
        Tokens.
    dtype : torch.dtype
    n, m : int
    op : {"fwd", "bwd", "dw", "decompress", "compress"}
        ``x @ W.T`` (:func:`~transmask.kernels.nm_matmul`), ``dy @ W``
        (:func:`~transmask.kernels.nm_matmul_t`), the weight gradient
        (:func:`~transmask.kernels.convert.nm_sddmm`), or a conversion kernel of
        :mod:`transmask.kernels.convert`.
    arch : int
        80 or 90 (binds against that target's backend).
    sms : int
        SM count for the split-K heuristic (132: H100/H200 SXM).

    Notes
    -----
    The arguments are CPU tensors of the real shapes (``torch.empty``, nothing is computed),
    bound by Triton's own specialisation code, with the heuristics (``EVEN_R``/``EVEN_K``) and
    the configurations the autotuner's pruning keeps -- the same launch planning
    (``nm_kernel._launch_args``) the runtime uses.
    """
    if nk.INTERPRET:
        raise RuntimeError("compiling needs the real Triton JIT; import transmask.kernels without TRITON_INTERPRET=1")
    if op not in ("fwd", "bwd", "dw", "decompress", "compress"):
        raise ValueError(f"op must be one of fwd, bwd, dw, decompress, compress; got {op!r}")
    from . import convert as cv

    G = -(-K // m)
    S = G * n
    values = torch.empty((R, S), dtype=dtype)
    indices = torch.empty((R, -(-S // nk.indices_per_word(m))), dtype=torch.int32)
    target = _target(arch)
    consts = dict(N_KEEP=n, M=m, BITS=nk.index_bits(m), PER_WORD=nk.indices_per_word(m))
    if op in ("decompress", "compress"):
        dense = torch.empty((R, K), dtype=dtype)
        fn = cv._decompress_kernel if op == "decompress" else cv._compress_kernel
        blocks = dict(BLOCK_R=cv._CONV_R, BLOCK_K=cv._CONV_K)
        if op == "decompress":
            args = [values, indices, dense, R, K, values.stride(0), indices.stride(0), dense.stride(0)]
            kw = {**consts, "WORD_PATH": nk.word_path(dtype, n, m), **blocks}
        else:
            vb = torch.empty(1, dtype=torch.int32)
            args = [dense, indices, vb, values, R, K, dense.stride(0), indices.stride(0), vb.stride(0), values.stride(0)]
            kw = {**consts, "HAS_VALID": n == 1, **blocks}
        sig, ce, attrs = _bind(fn, args, {**kw, "num_warps": 4, "num_stages": 3}, target)
        return [Specialisation(kernel=f"nm_{op}", fn=fn, signature=sig, constexprs=ce, attrs=attrs, num_warps=4,
                               num_stages=3, config=blocks, weights_per_iter=blocks["BLOCK_R"] * blocks["BLOCK_K"])]
    if op == "dw":
        dy = torch.empty((T, R), dtype=dtype)
        x = torch.empty((T, K), dtype=dtype)
        vb = torch.empty(1, dtype=torch.int32)
        t_key = nk._t_bucket(T)
        args = [dy, x, indices, vb, values, T, R, K, t_key, dy.stride(0), dy.stride(1), x.stride(0), x.stride(1),
                indices.stride(0), vb.stride(0), values.stride(0)]
        fn = cv._sddmm_kernel.fn
        out = []
        for cfg in cv._sddmm_prune(cv.SDDMM_CONFIGS, {"T_KEY": t_key}):
            kw = {**consts, "HAS_VALID": n == 1, "UPCAST": False, "INPUT_PRECISION": "tf32", **cfg.kwargs,
                  "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
            sig, ce, attrs = _bind(fn, args, kw, target)
            out.append(Specialisation(kernel="nm_sddmm", fn=fn, signature=sig, constexprs=ce, attrs=attrs,
                                      num_warps=cfg.num_warps, num_stages=cfg.num_stages, config=dict(cfg.kwargs),
                                      weights_per_iter=cfg.kwargs["BLOCK_R"] * cfg.kwargs["BLOCK_K"]))
        return out
    trans = op == "bwd"
    a = torch.empty((T, R if trans else K), dtype=dtype)
    y = torch.empty((T, K if trans else R), dtype=dtype)
    plan = nk._launch_args(a, values, indices, K, n, m, trans, sms=sms)
    ws = torch.empty(max(plan.workspace_floats, 1), dtype=torch.float32)
    locks = torch.empty(max(plan.tiles, 1), dtype=torch.int32)
    args = [a, values, indices, y, ws, locks, *plan.dims,
            a.stride(0), a.stride(1), values.stride(0), indices.stride(0), y.stride(0), y.stride(1)]
    fn = nk._nm_mm_kernel_impl
    named = dict(zip([p.name for p in fn.params], args))
    out = []
    for cfg in plan.configs:
        meta = dict(cfg.kwargs)
        even = nk._even({**named, **meta})
        kw = {**plan.constexprs, **meta, **even, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
        sig, ce, attrs = _bind(fn, args, kw, target)
        out.append(Specialisation(
            kernel="nm_matmul_t" if trans else "nm_matmul", fn=fn, signature=sig, constexprs=ce, attrs=attrs,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages, config=meta, split=plan.grid(meta)[1],
            weights_per_iter=meta["BLOCK_R"] * meta["BLOCK_K"],
        ))
    return out


def compile_specialisation(spec: Specialisation, arch: int = 90):
    """``triton.compile`` of one :class:`Specialisation` for ``sm_<arch>``; returns the CompiledKernel."""
    from triton.compiler import ASTSource

    from triton import knobs

    src = ASTSource(fn=spec.fn, signature=spec.signature, constexprs=spec.constexprs, attrs=spec.attrs)
    # the options the JIT passes at launch (triton/runtime/jit.py, JITFunction.run), so that the
    # result lands in Triton's cache under the key a launch looks up (bench/gpu_check.py warms it)
    options = {"num_warps": spec.num_warps, "num_stages": spec.num_stages, "debug": bool(knobs.runtime.debug),
               "instrumentation_mode": knobs.compilation.instrumentation_mode,
               "fpsan_homomorphic_casts": knobs.compilation.fpsan_homomorphic_casts}
    return triton.compile(src, target=_target(arch), options=options)


def _ptxas_info(ptx: str, arch: int) -> dict:
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        # the flags triton itself passes (see triton/backends/nvidia/compiler.py)
        proc = subprocess.run([ptxas, "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu}", src, "-o", src + ".o"],
                              capture_output=True, text=True, check=True)
    log = proc.stderr + proc.stdout
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    stack = re.search(r"(\d+) bytes stack frame", log)
    return {
        "registers": int(regs.group(1)) if regs else None,
        "spill_stores": int(spills.group(1)) if spills else None,
        "spill_loads": int(spills.group(2)) if spills else None,
        "stack_bytes": int(stack.group(1)) if stack else None,
    }


def _disassemble(cubin: bytes) -> tuple[list[str], dict]:
    tool = SASS_TOOLS["nvdisasm"]
    if tool is None:
        raise FileNotFoundError("nvdisasm not found in the triton wheel (triton/backends/nvidia/bin)")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        text = subprocess.run([tool, "-c", path], capture_output=True, text=True, check=True).stdout
    ins, labels = [], {}
    for line in text.splitlines():
        lab = re.match(r"^(\.L_x_\d+):", line)
        if lab:
            labels[lab.group(1)] = len(ins)
            continue
        op = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
        if op:
            ins.append(op.group(1))
    return ins, labels


_MMA = re.compile(r"\b(HMMA|HGMMA|IMMA)\b")
_OPCODE = re.compile(r"^(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)")
# bytes one warp moves through shared memory per instruction (32 lanes x width)
_SMEM = {"STS": 4, "LDS": 4, "STS.U16": 2, "LDS.U16": 2, "STS.64": 8, "LDS.64": 8, "STS.128": 16, "LDS.128": 16,
         "LDSM.16.M88.4": 16, "LDSM.16.MT88.4": 16, "LDSM.16.M88.2": 8, "LDSM.16.MT88.2": 8,
         "LDSM.16.M88": 4, "LDSM.16.MT88": 4, "LDGSTS.E.BYPASS.128": 16, "LDGSTS.E.128": 16, "LDGSTS.E": 4,
         "LDGSTS.E.64": 8, "LDGSTS.E.BYPASS.64": 8}


def _loops(ins, labels):
    out = []
    for i, t in enumerate(ins):
        m = re.search(r"\bBRA\b.*\((\.L_x_\d+)\)", t)
        if m and labels.get(m.group(1), 1 << 62) <= i:
            out.append((labels[m.group(1)], i))
    return out


def _hgmma_smem_bytes(op: str, operands: str) -> int:
    # HGMMA.64xNx16.F32: B (16 x N fp16) always from shared memory; A (64 x 16) too unless a register
    shape = re.search(r"HGMMA\.64x(\d+)x(\d+)", op)
    if not shape:
        return 0
    nn, kk = int(shape.group(1)), int(shape.group(2))
    srcs = [s.strip() for s in operands.split(",")]
    a_from_smem = len(srcs) > 1 and srcs[1].startswith("gdesc")
    return (nn * kk * 2 + (64 * kk * 2 if a_from_smem else 0)) // 4  # per warp of the warpgroup


def code_stats(compiled, arch: int = 90, weights_per_iter: int | None = None, num_warps: int | None = None) -> dict:
    """Registers, spills, shared memory and main-loop SASS counts of a compiled kernel.

    Returns
    -------
    dict
        ``registers``, ``spill_stores``, ``spill_loads``, ``stack_bytes`` (ptxas -v),
        ``shared_bytes`` (static + dynamic), ``loop_instructions`` (SASS instructions in the
        body of the longest loop that contains an MMA), ``branches`` (forward branches
        inside it), ``local_memory_ops`` (LDL/STL anywhere: spills), ``opcodes`` (the body's
        most frequent opcodes), and with ``weights_per_iter``: ``warp_instr_per_weight`` and
        ``smem_bytes_per_weight`` (shared-memory bytes moved per dense weight in the loop,
        counting ldmatrix, ld/st.shared, cp.async writes and wgmma operand reads).
    """
    info = _ptxas_info(compiled.asm["ptx"], arch)
    ins, labels = _disassemble(compiled.asm["cubin"])
    warps = num_warps or compiled.metadata.num_warps
    loops = [lp for lp in _loops(ins, labels) if any(_MMA.search(t) for t in ins[lp[0]:lp[1] + 1])]
    res = dict(info, shared_bytes=int(compiled.metadata.shared), num_warps=warps, kernel_instructions=len(ins),
               local_memory_ops=sum(1 for t in ins if re.search(r"\b(LDL|STL)\b", t)))
    if not loops:
        res.update(loop_instructions=None, branches=None, opcodes={})
        return res
    a, b = max(loops, key=lambda lp: lp[1] - lp[0])
    body = ins[a:b + 1]
    ops = collections.Counter()
    smem = 0
    for t in body:
        op = _OPCODE.match(t).group(1)
        ops[op] += 1
        if op.startswith("HGMMA"):
            smem += _hgmma_smem_bytes(op, t[t.index(op) + len(op):])
        else:
            smem += 32 * _SMEM.get(op, 0)
    res.update(
        loop_instructions=len(body),
        branches=sum(1 for t in body[:-1] if re.search(r"\bBRA\b", t)),
        opcodes=dict(ops.most_common(12)),
    )
    if weights_per_iter:
        res["warp_instr_per_weight"] = len(body) * warps / weights_per_iter
        res["smem_bytes_per_weight"] = smem * warps / weights_per_iter
    return res
