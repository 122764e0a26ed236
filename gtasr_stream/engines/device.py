"""Which device and dtype the network runs on, and what counts as running out of its memory.

Shared by the Upscaler, the backends' callers, training, export and the benchmarks, so that
`--device`/`--precision` mean the same everywhere.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..errors import UserError

Precision = Literal["auto", "fp32", "fp16", "bf16"]


def resolve_device(name: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a usable device, or a UserError naming --device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: '{name}' is not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise UserError(f"--device: '{name}' is not supported (use auto, cpu, cuda or cuda:N)")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 products in hardware: AMX tiles or AVX512-BF16.

    oneDNN then runs bf16 convolutions and matmuls at 2-4x its fp32 speed (AMX Xeon, 2 cores: the tiny
    net's convolutions took 116 ms instead of 492 ms a 480x270 frame, benchmarks/NOTES.md); elsewhere it
    converts to fp32 and back, slower than plain fp32.  torch has no public query for this: the
    private `torch.cpu._is_*_supported` (since 2.3) are read defensively, so a torch without them
    reads as "no" and the CPU keeps fp32.
    """
    return any(
        bool(getattr(torch.cpu, f"_is_{isa}_supported", lambda: False)())
        for isa in ("amx_tile", "avx512_bf16")
    )


def resolve_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    """auto: FP16 on CUDA (the speed path); on the CPU bf16 where it is native (cpu_has_native_bf16:
    the Upscaler runs it as autocast over float32 weights), else FP32 (emulated half precision is slow)."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    raise ValueError(f"precision must be one of auto, fp32, fp16, bf16, got {precision!r}")


def is_oom(e: BaseException) -> bool:
    """torch's out-of-memory error, or a RuntimeError saying so (older paths and some backends)."""
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower()
    )
