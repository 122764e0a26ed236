"""`Upscaler`, the one object the pipeline, the preview and the Python API call, and its policies.

RGB in [0,1] on its device in, 4x RGB in [0,1] out.  It owns everything that is the same whichever
backend runs the network: the stream's noise (fixed, fresh or none, drawn on the CPU from the seed),
batching, tiling, the out-of-memory ladder (halve the batch, then tile, then halve the tile, saying
so once each, instead of failing a long job half-way) and the choice of backend (`auto`, or the one
named).  The network call itself is `self.step`, `(lq, eps) -> hr`, built by one function of the
backend's module (`torch_engine.torch_step`, `onnx_engine.onnx_step`, `trt_engine.trt_step`,
`aoti_engine.aoti_step`); backends never import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from ..errors import UserError
from ..model import ConsistencyModel
from ..model.sharpen import unsharp
from ..weights import load_net
from .aoti_engine import aoti_step
from .device import Precision, is_oom, resolve_device, resolve_dtype
from .onnx_engine import onnx_step
from .tiling import MIN_TILE, Step, run_tiled
from .torch_engine import torch_step
from .trt_engine import trt_available, trt_step

Noise = Literal["auto", "fixed", "fresh", "none"]
NOISES = ("fixed", "fresh", "none")
Backend = Literal["auto", "torch", "onnx", "trt", "aoti"]
BACKENDS = ("torch", "onnx", "trt", "aoti")
MAX_SHARPEN = 2.0


class Upscaler:
    """4x upscaling of RGB batches with one GTASR network call per batch (or per tile)."""

    scale = 4

    def __init__(
        self,
        model: ConsistencyModel | None = None,
        *,
        weights: str | Path | None = None,
        model_name: str | None = None,  # a shipped model (--model); default: the video model
        denoise: float | None = None,  # blend of the shipped video (0) and restore (1) models
        device: str = "auto",
        precision: Precision = "auto",
        batch: int = 4,
        tile: int = 0,
        tile_pad: int = 16,
        noise: Noise = "auto",
        sharpen: float | None = None,  # unsharp-mask weight of the output; None: the weights' own
        seed: int = 0,
        backend: Backend = "auto",
        onnx: str | Path | None = None,
        pt2: str | Path | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        if noise not in ("auto", *NOISES):
            raise ValueError(f"noise must be one of auto, {', '.join(NOISES)}, got {noise!r}")
        if batch < 1 or tile < 0 or tile_pad < 0:
            raise ValueError("batch must be >= 1, tile and tile_pad >= 0")
        self.device = resolve_device(device)
        cpu = self.device.type == "cpu"
        self.dtype = resolve_dtype(precision, self.device)  # the precision the network computes in
        if cpu and precision == "auto" and backend in ("onnx", "aoti", "trt"):
            self.dtype = torch.float32  # their CPU bf16 paths are not measured faster: the exact path
        # CPU bf16 is autocast over float32 weights, not bf16 weights: the GroupNorms, the bicubic
        # residual and the sums stay fp32, so it is closer to fp32 (PSNR 70 against 58 dB on the
        # tiny net) and no slower (benchmarks/NOTES.md "CPU precision"). The input stays float32.
        self.autocast = cpu and self.dtype == torch.bfloat16 and backend in ("auto", "torch")
        # The CPU's eager step is `OneStep` (model/onestep.py), bf16 or, where bf16 is not native,
        # float32: the same numbers to 1e-5, 1.5-1.75x faster. An --fp32 the user asks for keeps the
        # generic sampler, bit for bit
        self.onestep = cpu and backend in ("auto", "torch") and (self.autocast or precision == "auto")
        self.meta: dict[str, str] = {}
        if model is None:
            net, self.meta = load_net(weights, model_name, denoise)
            model = ConsistencyModel(net)
        self.model = model.to(self.device, self.io_dtype).eval()
        if self.device.type == "cuda" or self.autocast:
            # channels-last weights: oneDNN/cuDNN's fast convolutions. The CPU's activations stay
            # contiguous: its bicubic and pixel_unshuffle are 2-3x slower on channels-last tensors
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.batch, self.tile, self.tile_pad = batch, tile, tile_pad
        # auto: what the weights' evaluation chose (their 'noise' metadata), else one fixed noise
        self.noise = self.meta.get("noise", "fixed") if noise == "auto" else noise
        if self.noise not in NOISES:
            raise UserError(
                f"the weights' metadata asks for noise {self.noise!r}, which this version lacks; pass --noise"
            )
        # None: the amount the weights were calibrated with (their 'sharpen' metadata), else none
        self.sharpen = float(self.meta.get("sharpen", 0)) if sharpen is None else sharpen
        if not 0 <= self.sharpen <= MAX_SHARPEN:  # click bounds --sharpen; this is the Python API or a file
            where = "the weights' metadata asks for" if sharpen is None else "got"
            raise UserError(f"sharpen must be in [0, {MAX_SHARPEN:g}]: {where} {self.sharpen:g}")
        self.seed = seed
        self.warn = on_warning or (lambda msg: None)
        self._gen = torch.Generator().manual_seed(seed)
        self._fixed: dict[tuple[int, int], torch.Tensor] = {}
        self.step: Step = torch_step(self.model, self._autocast_dtype(), self.onestep)
        self.backend = "torch"  # what runs the network
        self.backend_note = ""  # why auto chose it
        if onnx is not None and backend not in ("onnx", "trt"):
            raise UserError("--onnx PATH needs --backend onnx (or trt, which builds its engine from it)")
        if pt2 is not None and backend != "aoti":
            raise UserError("--pt2 PATH needs --backend aoti")
        if backend == "auto":
            self._auto(precision)
        elif backend in BACKENDS:
            self._use(backend, precision, onnx, pt2)
        else:
            raise ValueError(f"backend must be one of auto, {', '.join(BACKENDS)}, got {backend!r}")

    # ---------------------------------------------------------------- backend choice

    def _use(
        self, backend: str, precision: Precision, onnx: str | Path | None, pt2: str | Path | None
    ) -> None:
        """Make `backend` run the network (or raise UserError saying what it needs)."""
        if backend == "torch":
            self.step = torch_step(self.model, self._autocast_dtype(), self.onestep)
        elif backend == "onnx":
            step = onnx_step(self.model, onnx, self.device, self.dtype, self.warn)
            if precision != "auto" and step.dtype != self.dtype:
                raise UserError(f"--{precision}: {onnx} is a {str(step.dtype).removeprefix('torch.')} graph")
            self.step, self.dtype = step, step.dtype  # a given graph's precision wins over the default
        elif backend == "aoti":
            aoti = aoti_step(self.model, pt2, self.device, self.dtype, self.warn)
            if precision != "auto" and aoti.dtype != self.dtype:
                raise UserError(f"--{precision}: {pt2} is a {str(aoti.dtype).removeprefix('torch.')} package")
            self.step, self.dtype = aoti, aoti.dtype
        elif backend == "trt":
            self.step = trt_step(
                self.model,
                onnx,
                self.device,
                self.dtype,
                self.warn,
                batch=self.batch,
                tile_pad=self.tile_pad,
                current_tile=lambda: self.tile,  # read per call: the OOM ladder may start tiling
            )
        else:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend = backend

    @property
    def io_dtype(self) -> torch.dtype:
        """The dtype the step takes and the weights are in: float32 under CPU autocast, else `dtype`."""
        return torch.float32 if self.autocast else self.dtype

    def _autocast_dtype(self) -> torch.dtype | None:
        return self.dtype if self.autocast else None

    def _auto(self, precision: Precision) -> None:
        """The fastest backend that is ready here; any that fails says why, and the next one is tried.

        On CUDA: TensorRT when installed, else PyTorch eager. On the CPU: eager. AOTInductor stays
        opt-in (`--backend aoti`) until a measurement puts it ahead: on the CPU it is slower than
        eager (tiny, 2 cores: 8.3 vs 13.5 fps at 128x128, 0.19 vs 0.28 fps at 960x540;
        benchmarks/results/throughput_cpu-2t_2026-11-23T0509.json), on CUDA it is not measured yet,
        and its first use compiles for minutes.
        """
        candidates: list[tuple[str, str]] = []
        if self.device.type == "cuda" and trt_available():
            candidates.append(("trt", "TensorRT is installed"))
        for name, why in candidates:
            try:
                self._use(name, precision, None, None)
            except Exception as e:  # any failure of an optional backend: say so, use the next
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.warn(f"backend {name} failed ({reason}); trying the next")
                continue
            self.backend_note = why
            return
        self.backend_note = (
            "TensorRT is not installed" if self.device.type == "cuda" else "fastest on the CPU"
        )

    # ---------------------------------------------------------------- noise

    def noise_for(self, b: int, h: int, w: int) -> torch.Tensor | None:
        """ε of HR size (h, w): the stream's one ε (fixed), a new one per frame (fresh) or none.

        Drawn on the CPU from the seed so that every device and tiling sees the same numbers.
        """
        if self.noise == "none":
            return None
        if self.noise == "fixed":
            if (h, w) not in self._fixed:
                g = torch.Generator().manual_seed(self.seed)
                self._fixed[(h, w)] = torch.randn(1, 3, h, w, generator=g).to(self.device, self.io_dtype)
            return self._fixed[(h, w)]
        return torch.randn(b, 3, h, w, generator=self._gen).to(self.device, self.io_dtype)

    # ---------------------------------------------------------------- batching, tiling, OOM

    @torch.inference_mode()
    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb: (B,3,h,w) float in [0,1] on `self.device` -> (B,3,4h,4w) float32 in [0,1]."""
        b, _, h, w = rgb.shape
        lq = (rgb.to(self.io_dtype) * 2 - 1).contiguous(memory_format=self._memory_format())
        eps = self.noise_for(b, h * self.scale, w * self.scale)
        outs = []
        i = 0
        while i < b:
            n = min(self.batch, b - i)
            e = eps if eps is None or eps.shape[0] == 1 else eps[i : i + n]
            try:
                outs.append(self._run(lq[i : i + n], e))
                i += n
            except Exception as ex:
                if not is_oom(ex):
                    raise
                self._shrink(h, w)
        # One chunk on the CPU: its steps (eager, ONNX Runtime, AOTInductor, tiles) return a fresh
        # tensor, so the conversion below can run in place without the copy. On a GPU the copy stays:
        # a step there may hand out a buffer its next call reuses (benchmarks/NOTES.md "Changes")
        single = len(outs) == 1 and self.device.type == "cpu"
        out = outs[0] if single else torch.cat(outs)
        out = out.add_(1).mul_(0.5).clamp_(0, 1)
        return unsharp(out, self.sharpen) if self.sharpen else out

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.device.type == "cuda" else torch.contiguous_format

    def _run(self, lq: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        if self.tile and (lq.shape[-2] > self.tile or lq.shape[-1] > self.tile):
            return run_tiled(self.step, lq, eps, self.tile, self.tile_pad, self.scale)
        return self.step(lq, eps).float()

    def _shrink(self, h: int, w: int) -> None:
        """One step down the out-of-memory ladder: batch/2, ..., 1, then tiles, then smaller tiles."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch > 1:
            self.batch //= 2
            self.warn(f"out of GPU memory: batch reduced to {self.batch}")
        elif max(h, w) <= MIN_TILE:  # a MIN_TILE tile would cover the whole frame: tiling cannot help
            raise UserError(
                f"out of GPU memory at batch 1 on a {w}x{h} frame; use a smaller preset or --device cpu"
            )
        elif not self.tile or self.tile > max(h, w):
            self.tile = max(MIN_TILE, min(512, max(h, w) // 2))
            self.warn(f"out of GPU memory at batch 1: tiling with {self.tile}-px tiles")
        elif self.tile // 2 >= MIN_TILE:
            self.tile //= 2
            self.warn(f"out of GPU memory: tiles reduced to {self.tile} px")
        else:
            raise UserError(
                f"out of GPU memory even at batch 1 with {self.tile}-px tiles; use a smaller preset or --device cpu"
            )
