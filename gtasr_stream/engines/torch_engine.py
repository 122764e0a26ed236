"""The PyTorch eager backend: the one-step sampler called as it is (CPU or CUDA, any precision).

It owns no policy: noise, batching, tiling and the out-of-memory ladder are `upscaler.Upscaler`'s,
which puts the model on its device, dtype and memory format before asking for a step, and says
whether to run it under autocast (bf16 on the CPU).
"""

from __future__ import annotations

import torch

from ..model import ConsistencyModel, sample_one_step
from ..model.consistency import bicubic_x4
from ..model.onestep import OneStep, onestep_supported
from .tiling import Step


def torch_available() -> bool:
    """Eager PyTorch runs wherever this package imports."""
    return True


def torch_step(model: ConsistencyModel, autocast: torch.dtype | None = None, onestep: bool = False) -> Step:
    """The step for `--backend torch`: (lq, eps) -> hr with `model` on its own device and dtype.

    autocast: run the convolutions and linears in this dtype (CPU bf16) while the weights, GroupNorm,
    the bicubic residual and the sums stay in the model's float32. onestep: on the CPU, without
    noise, run `OneStep`, the same function rearranged for eager CPU execution (about 1.5x faster
    a frame), built once from the model's weights as they are now, with channels-last weights.
    """
    cpu = next(model.parameters()).device.type == "cpu"
    fast = None
    if onestep and cpu and onestep_supported(model):
        fast = OneStep(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def step(lq: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        # lq (B,3,h,w) in [-1,1], eps (B or 1,3,4h,4w) or None, model's device/dtype -> (B,3,4h,4w)
        if autocast is None:
            return fast(lq) if fast is not None and eps is None else sample_one_step(model, lq, eps)
        bicubic = bicubic_x4 if lq.device.type == "cpu" else None  # the faster CPU bicubic
        with torch.autocast(lq.device.type, dtype=autocast):
            if fast is not None and eps is None:
                return fast(lq)
            return sample_one_step(model, lq, eps, bicubic)  # float32: the head's bf16 + the fp32 bicubic

    return step
