"""Where one frame's time goes: torch.profiler over one `Upscaler` call (the shipped model) and the
pipeline's colour conversions around it, grouped into the categories of benchmarks/NOTES.md.

    python -m benchmarks.profile_frame --size 480x270 --precision auto --batch 1

Prints one line per category (self CPU time of its aten ops, ms per frame and share) and the top ops.
Self times are wall time inside each op on the calling thread, so on a loaded machine they stretch;
the shares are what to read. `wall` is the call's own time; `other` is what no listed op claims
(Python, dispatch, threads waiting).
"""

from __future__ import annotations

import time
from typing import Any, cast

import click
import torch
from torch.profiler import ProfilerActivity, profile

from gtasr_stream.engines.upscaler import Upscaler
from gtasr_stream.video.color import YUVLayout, rgb_to_yuv, yuv_to_rgb

from .common import sizes_option

# aten op -> category
CATEGORIES: dict[str, str] = {
    "aten::mkldnn_convolution": "convolutions",
    "aten::convolution": "convolutions",
    "aten::_convolution": "convolutions",
    "mkldnn::_convolution_pointwise": "convolutions",  # OneStep's conv + LeakyReLU
    "aten::addmm": "attention and MLP (linears, matmuls, softmax)",
    "aten::bmm": "attention and MLP (linears, matmuls, softmax)",
    "aten::baddbmm": "attention and MLP (linears, matmuls, softmax)",
    "aten::mm": "attention and MLP (linears, matmuls, softmax)",
    "aten::_softmax": "attention and MLP (linears, matmuls, softmax)",
    "aten::gelu": "attention and MLP (linears, matmuls, softmax)",
    "aten::upsample_nearest2d": "upsampling, LeakyReLU (head, notch)",
    "aten::leaky_relu": "upsampling, LeakyReLU (head, notch)",
    "aten::upsample_bilinear2d": "upsampling, LeakyReLU (head, notch)",
    "aten::upsample_bicubic2d": "bicubic x4",
    "aten::native_group_norm": "GroupNorm, SiLU",
    "aten::silu": "GroupNorm, SiLU",
    "aten::add": "sums, scales, clamps",
    "aten::add_": "sums, scales, clamps",
    "aten::mul": "sums, scales, clamps",
    "aten::mul_": "sums, scales, clamps",
    "aten::sub": "sums, scales, clamps",
    "aten::sub_": "sums, scales, clamps",
    "aten::sum": "sums, scales, clamps",
    "aten::clamp": "sums, scales, clamps",
    "aten::clamp_": "sums, scales, clamps",
    "aten::copy_": "copies, casts, layout (cat, pad, pixel_unshuffle)",
    "aten::cat": "copies, casts, layout (cat, pad, pixel_unshuffle)",
    "aten::pixel_unshuffle": "copies, casts, layout (cat, pad, pixel_unshuffle)",
    "aten::reflection_pad2d": "copies, casts, layout (cat, pad, pixel_unshuffle)",
    "aten::avg_pool2d": "copies, casts, layout (cat, pad, pixel_unshuffle)",
    "aten::pixel_shuffle": "copies, casts, layout (cat, pad, pixel_unshuffle)",
}


def profile_call(fn: Any, frames: int) -> tuple[dict[str, float], list[tuple[str, float]], float]:
    """(ms per frame by category, top ops, wall ms per frame) of one call of fn after a warm-up."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        t = time.perf_counter()
        fn()
        wall = (time.perf_counter() - t) * 1e3 / frames
    by: dict[str, float] = {}
    ops = []
    for e in p.key_averages():
        ms = e.self_cpu_time_total / 1e3 / frames
        if ms <= 0:
            continue
        ops.append((e.key, ms))
        by[CATEGORIES.get(e.key, "other ops")] = by.get(CATEGORIES.get(e.key, "other ops"), 0.0) + ms
    return by, sorted(ops, key=lambda o: -o[1])[:12], wall


@click.command()
@click.option("--size", default="480x270", callback=sizes_option, help="LR WxH.")
@click.option("--precision", default="auto", type=click.Choice(["auto", "fp32", "bf16"]))
@click.option("--batch", default=1, type=click.IntRange(1))
def main(size: tuple[tuple[int, int], ...], precision: str, batch: int) -> None:
    """Profile the shipped model's Upscaler call and the colour conversions of one batch."""
    [(w, h)] = size
    up = Upscaler(device="cpu", precision=cast(Any, precision), batch=batch)
    rgb = torch.rand(batch, 3, h, w)
    layout = YUVLayout(8, 1, 1, "bt709", "limited")
    planes = rgb_to_yuv(rgb, layout)
    hr = torch.rand(batch, 3, 4 * h, 4 * w)
    print(
        f"{w}x{h} -> {4 * w}x{4 * h}, {up.dtype} (autocast {up.autocast}), batch {batch}, {torch.get_num_threads()} threads"
    )
    for name, fn in (
        ("model (Upscaler call)", lambda: up(rgb)),
        ("colour: YUV->RGB in, RGB->YUV out", lambda: (yuv_to_rgb(*planes, layout), rgb_to_yuv(hr, layout))),
    ):
        by, ops, wall = profile_call(fn, batch)
        total = sum(by.values())
        print(f"\n{name}: wall {wall:.0f} ms/frame, ops {total:.0f} ms/frame")
        for cat, ms in sorted(by.items(), key=lambda kv: -kv[1]):
            print(f"  {cat:52s} {ms:8.1f} ms {100 * ms / total:5.1f} %")
        print("  top ops: " + ", ".join(f"{k.removeprefix('aten::')} {ms:.1f}" for k, ms in ops))


if __name__ == "__main__":
    main()
