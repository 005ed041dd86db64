"""Test helpers for the package's Triton kernels without a GPU: record the launches a CPU run makes, then compile
each ahead of time for Hopper (sm_90: H100/H200) and Ampere (sm_80), as the device would; and run code in a
subprocess under Triton's interpreter."""

from __future__ import annotations

import os
from pathlib import Path

import torch

POINTER = {torch.uint8: "*u8", torch.int32: "*i32", torch.float32: "*fp32", torch.float16: "*fp16",
           torch.bfloat16: "*bf16"}


def interpreter_env() -> dict:
    """The environment of a subprocess running Triton's interpreter on this checkout (a PYTHONPATH already set,
    e.g. another Triton version to try, comes after it)."""
    path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path}


class LaunchRecorder:
    """Stands in for a ``@triton.jit`` function: ``recorder[grid](*args, **constexprs)`` records the launch's
    signature (argument types, constexpr values) instead of running it. ``launches``: one entry per distinct one."""

    def __init__(self, kernel) -> None:
        self.kernel, self.launches = kernel, {}

    def __getitem__(self, grid):
        def launch(*args, **constexprs):
            sig = {name: POINTER[a.dtype] if isinstance(a, torch.Tensor) else "i32" if abs(a) < 2**31 else "i64"
                   for name, a in zip(self.kernel.arg_names, args, strict=False)}
            self.launches[tuple(sig.values()) + tuple(constexprs.items())] = (sig, constexprs)
        return launch

    def compile_all(self, archs=(90, 80)) -> int:
        """Compile every recorded launch for each CUDA architecture; returns how many compiled (errors raise)."""
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        n = 0
        for sig, constexprs in self.launches.values():
            full = {**sig, **dict.fromkeys(constexprs, "constexpr")}
            for arch in archs:
                compiled = triton.compile(ASTSource(fn=self.kernel, signature=full, constexprs=constexprs),
                                          target=GPUTarget("cuda", arch, 32))
                assert len(compiled.asm["cubin"]) > 1000, (arch, full)
                n += 1
        return n
