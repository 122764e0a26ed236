"""The options of each `gtasr-train` command: one frozen dataclass each, METHOD.md's values as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .lpips import DEFAULT_LPIPS


@dataclass(frozen=True)
class TrainOptions:
    """What Stage I and Stage II share."""

    data: Path  # folder of HR photos (jpg/png/webp, each side >= crop)
    out: Path  # run folder: checkpoints/, metrics.jsonl, samples/, ema.safetensors
    preset: str = "tiny"  # network preset of gtasr_stream.model
    val: Path | None = None  # photos for the sample grids (a fixed crop of each)
    steps: int = 500_000  # total optimiser steps of this stage
    batch: int = 32  # per process (DDP multiplies it by the world size)
    crop: int = 256  # HR crop; the LR input is crop/4
    lr: float = 5e-5  # AdamW learning rate
    betas: tuple[float, float] = (0.9, 0.9)  # AdamW betas (METHOD.md)
    weight_decay: float = 0.0
    lr_halve_at: int = 50_000  # step at which the learning rate halves
    ema: float = 0.999  # EMA rate of the inference weights
    grad_clip: float = 1.0  # max global gradient norm
    precision: str = "auto"  # auto | bf16 | fp32: autocast of the forward passes (auto: bf16 where native)
    degradation: str = "realesrgan"  # video | realesrgan | mix: how LR inputs are made (video_degradation.py)
    # Weight of d(f(y, eta=1), x0): the one-step output from the noise-free input, which is what
    # gtasr-stream --noise none (the video weights' mode) runs; L_CT only ever sees y + eps there. 0: off
    direct_loss: float = 0.0
    direct_lpips: float = (
        0.5  # LPIPS share of that term's distance (the rest Charbonnier); 0.5 = METHOD.md's d
    )
    # Weight of grid_loss on that output (the error's power at the harmonics of a 4-pixel grid, over
    # its mean power); needs direct_loss > 0. 0: off
    grid_loss: float = 0.0
    # Weight of phase_bias on that output: the error's bias per 4x4 pixel phase (the grid on flat
    # areas), in code values squared. Needs direct_loss > 0. 0: off
    phase_loss: float = 0.0
    # Weight of rect_loss (LPIPS of the Sobel maps, Stage II's structural term) on that output: edges
    # as sharp as the HR's, where LPIPS and Charbonnier alone settle for blur. Needs direct_loss > 0. 0: off
    direct_rect: float = 0.0
    # Weight of texture_loss (Gram matrices of VGG relu1_2..relu3_3 per 32-pixel square) on that output:
    # texture of the HR's kind where the LR hides it. Needs direct_loss > 0. 0: off
    direct_texture: float = 0.0
    # Real-ESRGAN's sharpened ground truth: the terms on that output compare it with usm_sharpen(HR,
    # this weight) instead of the HR (losses.py); the consistency terms keep the HR. 0: off
    gt_usm: float = 0.0
    codec_prob: float = 0.0  # share of batches that also get H.264/H.265 compression (video inputs)
    lpips: Path = DEFAULT_LPIPS  # lpips_vgg16.safetensors
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: the local rank's GPU)
    checkpoint_every: int = 1000  # steps between atomic checkpoints (and at the end)
    log_every: int = 10  # steps between metrics.jsonl lines
    sample_every: int = 1000  # steps between sample grids (LR | output | HR)
    resume: bool = False  # continue from the newest checkpoint in out/checkpoints
    init: Path | None = None  # start theta and the EMA from weights, a checkpoint or a run folder


@dataclass(frozen=True)
class Stage1Options(TrainOptions):
    """Stage I: consistency training with Trajectory Alignment."""

    grid_power: float = 2.5  # eta_i = (i/(N-1))^p, GTASR's power-law grid (CTMSR: p = 1)
    grid_n: tuple[int, int] = (5, 4)  # N for the first half of training, then N for the second
    trajectory_alignment: bool = True  # L_TA on (the TA ablation turns it off)


@dataclass(frozen=True)
class Stage2Options(TrainOptions):
    """Stage II: Distribution Trajectory Matching plus Dual-Reference Structural Rectification."""

    steps: int = 2_000
    batch: int = 12
    lr_halve_at: int = 10**12  # never, in METHOD.md's Stage II
    grid_power: float = 1.0
    grid_n: tuple[int, int] = (4, 4)
    dtm_eta: float = 1 / 3  # where DTM compares trajectories
    frozen_reset: int = 1000  # steps between resets of the frozen copy f_theta' to theta
    rect_published: bool = False  # True: the published code's Rect without gradient (ablation)
