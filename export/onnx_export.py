"""Export the one-step sampler to ONNX and check the graph against PyTorch with ONNX Runtime.

The graph itself (`SamplerGraph`, `export_onnx`) is defined by the runtime's ONNX engine, which needs
it to export on first use; this module adds the validation a deployer runs before shipping a file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gtasr_stream.engines.onnx_engine import PRECISIONS, export_onnx
from gtasr_stream.errors import UserError
from gtasr_stream.model import SCALE, ConsistencyModel, sample_one_step

__all__ = ["TOLERANCE", "OnnxCheckError", "check_onnx", "export_onnx", "max_difference"]

# Max |onnx - torch fp32| on hr in [-1,1] (2/255 is one 8-bit code value).  Measured on the tiny
# preset with random weights: fp32 3e-7 (float reordering), fp16 4e-4 (PyTorch's own fp16 is 4e-4).
TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2}


class OnnxCheckError(UserError):
    """The graph's output differs from PyTorch's beyond TOLERANCE, or has the wrong shape."""


def max_difference(
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: ConsistencyModel,
    sizes: Sequence[tuple[int, int, int]],
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
) -> float:
    """Max |run(lq, eps) - sample_one_step(model fp32)| over fresh random inputs at each (B,h,w) of
    `sizes`.  The inputs are rounded to `dtype` (and put on `device`) for `run`; the reference sees the
    rounded values in float32 on the CPU.  A wrong output shape, or a size that cannot be run here
    (out of memory), raises OnnxCheckError."""
    reference = copy.deepcopy(model).to("cpu", torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for b, h, w in sizes:
        try:
            lq = (torch.rand(b, 3, h, w, generator=g) * 2 - 1).to(dtype)  # (B,3,h,w) in [-1,1]
            eps = torch.randn(b, 3, SCALE * h, SCALE * w, generator=g).to(dtype)  # (B,3,4h,4w)
            with torch.inference_mode():
                hr = run(lq.to(device), eps.to(device)).to("cpu", torch.float32)
                ref = sample_one_step(reference, lq.float(), eps.float())  # (B,3,4h,4w) float32
        except (RuntimeError, MemoryError) as e:  # out of memory (torch, onnxruntime), a size it refuses
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OnnxCheckError(f"cannot be checked at {b}x{h}x{w} ({reason[:200]})") from e
        if tuple(hr.shape) != tuple(ref.shape):
            raise OnnxCheckError(f"output {tuple(hr.shape)} at {b}x{h}x{w}, PyTorch gives {tuple(ref.shape)}")
        worst = max(worst, (hr - ref).abs().max().item())
    return worst


def check_onnx(
    path: Path,
    model: ConsistencyModel,
    sizes: Sequence[tuple[int, int, int]],
    dtype: torch.dtype,
    shown: Path
    | None = None,  # the name messages give (the final one of a file checked under a temporary name)
) -> float:
    """Run the graph at `path` with onnxruntime (CPU) at each (B,h,w) in `sizes` on fresh random
    inputs and compare with sample_one_step of `model` in float32; returns the max abs difference.

    dtype is the graph's; its inputs are rounded to it, and both sides see the rounded values.
    Raises OnnxCheckError beyond TOLERANCE[dtype].  bfloat16 cannot be checked here: onnxruntime's
    CPU provider has no bfloat16 kernels for this network (ValueError).
    """
    if dtype not in TOLERANCE:
        raise ValueError(
            f"onnxruntime cannot run a {dtype} graph of this network on the CPU; check fp32 or fp16"
        )
    try:
        import onnxruntime
    except ImportError:
        raise UserError("checking the graph needs onnxruntime: pip install gtasr-stream[onnx]") from None
    shown = shown or path
    try:
        session: Any = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # e.g. an opset newer than this onnxruntime
        raise OnnxCheckError(f"{shown}: onnxruntime cannot load it ({str(e).strip().splitlines()[0]})") from e

    def run(lq: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        (hr,) = session.run(["hr"], {"lq": lq.numpy(), "eps": eps.numpy()})
        return torch.from_numpy(hr)

    try:
        worst = max_difference(run, model, sizes, dtype)
    except OnnxCheckError as e:
        raise OnnxCheckError(f"{shown}: {e}") from e
    if worst > TOLERANCE[dtype]:
        raise OnnxCheckError(
            f"{shown}: max |onnx - torch| = {worst:.3g} exceeds the {PRECISIONS[dtype]} tolerance {TOLERANCE[dtype]:g}"
        )
    return worst
