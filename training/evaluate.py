"""`gtasr-train evaluate`: quality of a checkpoint next to bicubic, Lanczos and the peer models.

Owns the evaluation protocol: centre crops of a held-out photo folder degraded with a fixed seed
(PSNR-Y, SSIM-Y, LPIPS), and moving-camera clips made from the same photos, degraded identically in
every frame as a real video would be (per-frame quality and flicker, for each --noise mode).
Writes results.json, results.md and compare.png (side-by-side crops) into the output folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gtasr_stream.engines.device import resolve_device
from gtasr_stream.engines.upscaler import Noise, Upscaler
from gtasr_stream.files import atomic_path

from .clips import moving_camera_clip
from .degradation import DegradationConfig, degrade_fixed
from .evaluate_video import real_clip_rows, save_crops, video_rows
from .images import list_images, load_image
from .lpips import DEFAULT_LPIPS, load_lpips
from .metrics import flicker, psnr_y, ssim_y
from .peers import PEER_FILES, load_peer

Method = Callable[[torch.Tensor], torch.Tensor]  # (B,3,h,w) in [0,1] -> (B,3,4h,4w) in [0,1]


@dataclass(frozen=True)
class EvaluateOptions:
    weights: Path  # the checkpoint to evaluate (gtasr-stream format)
    val: Path  # held-out photos
    out: Path  # folder for results.json, results.md, compare.png
    lpips: Path = DEFAULT_LPIPS
    peers: Path | None = DEFAULT_LPIPS.parent  # folder of the peer weight files; None: no peers
    crop: int = 256  # HR centre crop per photo (LR crop/4), also the side of the clips
    clips: int = 4  # moving-camera clips, one per photo
    clip_frames: int = 8
    videos: Path | None = DEFAULT_LPIPS.parents[1] / "videos"  # real clips (no truth); None: skip them
    real_frames: int = 8  # frames read from each real clip
    # centre crop of each real clip's LR frames (px a side, at most); 0: whole frames (slow peers on
    # a CPU, a steadier periodicity: more 256-px segments to average, training/metrics.py)
    real_size: int = 128
    real_spread: bool = False  # frames evenly spaced from each clip's first to its last, not the first
    seed: int = 0  # of the degradation: the same inputs for every method and every run
    device: str = "auto"


def _centre(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top : top + size, left : left + size]


def _lanczos(lq: torch.Tensor) -> torch.Tensor:
    out = []
    for img in lq.cpu():
        a = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        up = Image.fromarray(a).resize((a.shape[1] * 4, a.shape[0] * 4), Image.Resampling.LANCZOS)
        out.append(torch.from_numpy(np.array(up)).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(lq.device)


def bicubic(lq: torch.Tensor) -> torch.Tensor:
    return F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)


def _methods(cfg: EvaluateOptions, device: torch.device) -> dict[str, Method]:
    methods: dict[str, Method] = {
        "gtasr": Upscaler(
            weights=cfg.weights, device=str(device), precision="fp32", noise="auto", seed=cfg.seed
        ),  # the noise mode and output sharpening gtasr-stream runs these weights with by default
        "bicubic": bicubic,
        "lanczos": _lanczos,
    }
    for name, file in PEER_FILES.items():
        if cfg.peers is not None and (cfg.peers / file).is_file():
            net = load_peer(name, cfg.peers).to(device)
            methods[name] = torch.no_grad()(net)
    return methods


@torch.no_grad()
def evaluate(cfg: EvaluateOptions) -> dict[str, dict[str, float]]:
    device = resolve_device(cfg.device)
    lpips = load_lpips(cfg.lpips).to(device)
    paths = list_images(cfg.val)
    if not paths:
        raise ValueError(f"--val: no images in '{cfg.val}'")
    photos = [load_image(p) for p in paths]
    degradation = DegradationConfig()
    # 1. photos: centre crops, one fixed degradation
    hr = torch.stack([_centre(p, cfg.crop) for p in photos]).to(device)  # (N,3,crop,crop) in [0,1]
    lq = degrade_fixed(hr, degradation, cfg.seed)
    methods = _methods(cfg, device)
    results: dict[str, dict[str, float]] = {}
    outputs: dict[str, torch.Tensor] = {}
    up = methods["gtasr"]
    assert isinstance(up, Upscaler)
    modes: tuple[Noise, ...] = ("fixed", "fresh", "none")
    noise_modes: dict[str, Method] = {
        f"gtasr --noise {mode}": Upscaler(
            up.model, device=str(device), precision="fp32", noise=mode, sharpen=up.sharpen, seed=cfg.seed
        )
        for mode in modes
    }
    # the other noise modes on the photos too, so that the default's choice can be checked
    others = {k: m for k, m in noise_modes.items() if k != f"gtasr --noise {up.noise}"}
    for name, run in (methods | others).items():
        out = torch.cat([run(lq[i : i + 1]) for i in range(len(lq))])
        if name in methods:
            outputs[name] = out
        results[name] = {
            "psnr_y": psnr_y(out, hr).mean().item(),
            "ssim_y": ssim_y(out, hr).mean().item(),
            "lpips": lpips(out * 2 - 1, hr * 2 - 1).mean().item(),
        }
    # 2. moving-camera clips: every frame degraded with the same parameters, like a real video
    clip_methods: dict[str, Method] = {"bicubic": bicubic} | noise_modes
    per_clip: dict[str, list[tuple[float, float, float]]] = {k: [] for k in clip_methods}
    for i, photo in enumerate(photos[: cfg.clips]):
        clip = moving_camera_clip(photo, cfg.clip_frames, (cfg.crop, cfg.crop), seed=i).to(device)
        lq_clip = torch.cat([degrade_fixed(f[None], degradation, cfg.seed + i) for f in clip])
        for name, run in clip_methods.items():
            out = torch.cat([run(f[None]) for f in lq_clip])  # frame by frame, as a stream
            per_clip[name].append(
                (
                    psnr_y(out, clip).mean().item(),
                    lpips(out * 2 - 1, clip * 2 - 1).mean().item(),
                    flicker(out, clip),
                )
            )
    for name, rows in per_clip.items():
        if not rows:  # --clips 0
            continue
        a = np.array(rows)
        results[f"clips: {name}"] = {
            "psnr_y": a[:, 0].mean(),
            "lpips": a[:, 1].mean(),
            "flicker": a[:, 2].mean(),
        }
    # 3. what users' videos look like: the `video` strengths and the real clips (evaluate_video.py)
    crops: dict[str, list[torch.Tensor]] = {}
    if cfg.clips:  # --clips 0: the photos only (what the ablations use)
        results |= video_rows(methods, photos[: cfg.clips], lpips, cfg.crop, cfg.clip_frames, cfg.seed, crops)
        if cfg.videos is not None and cfg.videos.is_dir():
            results |= real_clip_rows(
                methods, cfg.videos, cfg.real_frames, cfg.real_size, crops, cfg.real_spread
            )
    # 4. files
    cfg.out.mkdir(parents=True, exist_ok=True)
    report = {
        "options": {k: str(v) for k, v in asdict(cfg).items()},
        "gtasr_noise": up.noise,  # the mode of the "gtasr" photo row (the weights' default)
        "results": _floats(results),
    }
    _write(cfg.out / "results.json", json.dumps(report, indent=1))
    _write(cfg.out / "results.md", markdown(results))
    _compare_png(cfg.out / "compare.png", outputs, hr)
    if crops:
        save_crops(cfg.out / "compare_video.png", crops)
    return results


def _floats(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {m: {k: round(float(v), 5) for k, v in r.items()} for m, r in results.items()}


def markdown(results: dict[str, dict[str, float]]) -> str:
    """The table; sharpness and periodicity are ratios to bicubic of the same input (1.0 = bicubic)."""
    lines = [
        "| method | PSNR-Y (dB) ↑ | SSIM-Y ↑ | LPIPS ↓ | flicker ↓ | sharpness ÷ bicubic | periodicity ÷ bicubic ↓ |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("psnr_y", "ssim_y", "lpips", "flicker", "sharpness", "periodicity")
    for name, r in results.items():
        cells = [f"{r[k]:.4f}" if k in r else "" for k in keys]
        if r.get("sharpness", 1.0) < 1.0:
            cells[4] += " (blurrier than bicubic)"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _compare_png(path: Path, outputs: dict[str, torch.Tensor], hr: torch.Tensor, size: int = 128) -> None:
    """The first photo's centre, side by side: each method, then the ground truth."""
    tiles = [_centre(o[0], size) for o in outputs.values()] + [_centre(hr[0], size)]
    row = torch.cat(tiles, dim=-1).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    with atomic_path(path, ".partial.png") as tmp:
        Image.fromarray(row).save(tmp)
