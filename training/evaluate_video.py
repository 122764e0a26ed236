"""The video half of `gtasr-train evaluate`: what users' videos look like, not the training distribution.

Owns two protocols and their crops:
- video rows: moving-camera clips made from the held-out photos, degraded with the fixed light / medium /
  heavy `video` settings (`VIDEO_STRENGTHS`): per-frame blur, resize and sensor noise, then the whole
  clip through a real encoder, as a camera and an upload make it. PSNR-Y, SSIM-Y, LPIPS and flicker
  against the truth, plus sharpness and periodicity relative to bicubic.
- real clips: the first frames of each clip in a folder (../shared/data/videos), no ground truth, so only
  the no-reference ratios against bicubic: sharpness (below 1.0: blurrier than bicubic) and
  periodicity (above 1.0: more grid than bicubic).
Every method runs frame by frame as a stream would. Crops: each method in the table's order (| truth).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gtasr_stream.files import atomic_path

from .clips import moving_camera_clip
from .degradation import NoiseDraw, VideoCodec, encode_frames
from .lpips import LPIPS
from .metrics import flicker, periodicity, psnr_y, sharpness, ssim_y
from .video_degradation import VIDEO_STRENGTHS, VideoDraw, apply_video_draw

Method = Callable[[torch.Tensor], torch.Tensor]  # (B,3,h,w) in [0,1] -> (B,3,4h,4w) in [0,1]
Row = dict[str, float]
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts")


def encode_clip(frames: np.ndarray, codec: VideoCodec, q: int) -> np.ndarray:
    """A whole clip through one encoder and back at preset medium (what encoders default to)."""
    return encode_frames(frames, codec, q, preset="medium")


def degrade_clip(clip: torch.Tensor, draw: VideoDraw, seed: int) -> torch.Tensor:
    """(T,3,H,W) HR in [0,1] → (T,3,H/4,W/4) LR on 8-bit levels: per-frame optics, resize and fresh
    sensor noise (seeded per frame), then the clip through each of the draw's encoders in turn."""
    frames = []
    for t, f in enumerate(clip):
        noise = draw.noise
        if noise is not None:  # sensor noise differs from frame to frame
            noise = NoiseDraw(noise.kind, noise.strength, noise.gray, seed * 1000 + t)
        d = VideoDraw(draw.blur_sigma, draw.defocus_radius, draw.intermediate, draw.resize_mode, noise, ())
        frames.append(apply_video_draw(f[None].cpu(), d))
    lq = torch.cat(frames)  # (T,3,h,w); 4:2:0 applied, replaced by the codec's own below
    if draw.encodes:
        imgs = (lq * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for codec, q in draw.encodes:
            imgs = encode_clip(imgs, codec, q)
        lq = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    return lq.to(clip.device)


def _run(method: Method, lq: torch.Tensor) -> torch.Tensor:
    return torch.cat([method(f[None]) for f in lq])  # frame by frame, as a stream


def video_rows(
    methods: dict[str, Method],
    photos: list[torch.Tensor],
    lpips: LPIPS,
    size: int,
    frames: int,
    seed: int,
    crops: dict[str, list[torch.Tensor]],
) -> dict[str, Row]:
    """`video {strength}: {method}` rows, averaged over one moving-camera clip per photo."""
    results: dict[str, Row] = {}
    for strength, draw in VIDEO_STRENGTHS.items():
        per: dict[str, list[list[float]]] = {k: [] for k in methods}
        for i, photo in enumerate(photos):
            clip = moving_camera_clip(photo, frames, (size, size), seed=i)  # (T,3,size,size)
            lq = degrade_clip(clip, draw, seed + i)
            outs = {name: _run(m, lq) for name, m in methods.items()}
            sharp_b, per_b = sharpness(outs["bicubic"]), periodicity(outs["bicubic"])
            for name, out in outs.items():
                per[name].append(
                    [
                        psnr_y(out, clip).mean().item(),
                        ssim_y(out, clip).mean().item(),
                        lpips(out * 2 - 1, clip * 2 - 1).mean().item(),
                        flicker(out, clip),
                        sharpness(out) / sharp_b,
                        periodicity(out) / per_b,
                    ]
                )
            if strength == "medium" and i == 0:
                crops["video medium"] = [o[0] for o in outs.values()] + [clip[0]]
        for name, rows in per.items():
            a = np.array(rows).mean(0)
            keys = ("psnr_y", "ssim_y", "lpips", "flicker", "sharpness", "periodicity")
            results[f"video {strength}: {name}"] = dict(zip(keys, map(float, a), strict=True))
    return results


def read_clip(path: Path, frames: int, size: int, spread: bool = False) -> torch.Tensor:
    """The first `frames` frames of a video file (spread: `frames` frames evenly spaced over the whole
    clip, first and last included), centre-cropped to at most size x size (even sides; size 0: whole
    frames, even sides); (T,3,h,w) float in [0,1]."""
    wanted: set[int] = set(range(frames))
    if spread:
        with av.open(str(path)) as container:
            total = sum(1 for _ in container.decode(video=0))
        n = min(frames, total)
        wanted = {round(i * (total - 1) / max(n - 1, 1)) for i in range(n)}
    with av.open(str(path)) as container:
        out = []
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1))
            if len(out) == len(wanted):
                break
    clip = torch.stack(out).float() / 255
    h, w = clip.shape[-2:]
    size = size or max(h, w)
    ch, cw = min(h, size) // 2 * 2, min(w, size) // 2 * 2
    top, left = (h - ch) // 2, (w - cw) // 2
    return clip[..., top : top + ch, left : left + cw]


def real_clip_rows(
    methods: dict[str, Method],
    folder: Path,
    frames: int,
    size: int,
    crops: dict[str, list[torch.Tensor]],
    spread: bool = False,
) -> dict[str, Row]:
    """`real {clip}: {method}` rows: sharpness and periodicity relative to bicubic (no ground truth)."""
    results: dict[str, Row] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        lq = read_clip(path, frames, size, spread)
        outs = {name: _run(m, lq) for name, m in methods.items()}
        sharp_b, per_b = sharpness(outs["bicubic"]), periodicity(outs["bicubic"])
        for name, out in outs.items():
            results[f"real {path.name}: {name}"] = {
                "sharpness": sharpness(out) / sharp_b,
                "periodicity": periodicity(out) / per_b,
            }
        crops[f"real {path.name}"] = [o[0] for o in outs.values()]
    return results


def _busiest(tile: torch.Tensor, size: int) -> tuple[int, int]:
    """Top-left of the `size` x `size` window with the most luma gradient: crops show detail, not sky."""
    y = tile.mean(0, keepdim=True)[None]  # (1,1,H,W)
    grad = (y[..., 1:, 1:] - y[..., :-1, 1:]).abs() + (y[..., 1:, 1:] - y[..., 1:, :-1]).abs()
    energy = F.avg_pool2d(grad, size - 1, stride=max(1, size // 8))  # (1,1,h',w')
    i = int(energy.flatten().argmax())
    return (i // energy.shape[-1]) * max(1, size // 8), (i % energy.shape[-1]) * max(1, size // 8)


def save_crops(path: Path, crops: dict[str, list[torch.Tensor]], size: int = 192) -> None:
    """One row per clip: the same `size` x `size` window of each method's first frame, side by side,
    where the last tile (the truth, or a method on the real clips) has the most detail."""
    rows = []
    for tiles in crops.values():
        h, w = tiles[0].shape[-2:]
        s = min(size, h, w)
        top, left = _busiest(tiles[-1], s)
        cut = [F.pad(t[:, top : top + s, left : left + s], (0, size - s, 0, size - s)) for t in tiles]
        rows.append(torch.cat(cut, -1))
    width = max(r.shape[-1] for r in rows)
    grid = torch.cat([F.pad(r, (0, width - r.shape[-1])) for r in rows], -2)
    img = grid.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    with atomic_path(path, ".partial.png") as tmp:
        Image.fromarray(img).save(tmp)
