"""The `video` degradation profile (training/video_degradation.py): shapes, 8-bit levels, seeding,
ranges, that it is milder than the Real-ESRGAN pipeline, every codec, 4:2:0, and the evaluation clips."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_degradation import is_8bit, photo, psnr

from training.data import PhotoCrops
from training.degradation import NoiseDraw, codec_round_trip, degrade
from training.evaluate_video import degrade_clip, encode_clip
from training.video_degradation import (
    REALESRGAN,
    VIDEO,
    VIDEO_STRENGTHS,
    VideoDraw,
    apply_video_draw,
    chroma_420,
    degrade_profile,
    degrade_video,
    sample_video_params,
)


def test_video_profile_shape_levels_and_seed() -> None:
    hr = photo(4, 64, 96)
    a = degrade_video(hr, VIDEO, torch.Generator().manual_seed(0))
    b = degrade_video(hr, VIDEO, torch.Generator().manual_seed(0))
    c = degrade_video(hr, VIDEO, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 16, 24) and is_8bit(a) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert any(not torch.equal(a[0], a[i]) for i in range(1, 4))
    with pytest.raises(ValueError, match="multiples of 4"):
        degrade_video(photo(1, 30, 32), VIDEO, torch.Generator())


def test_video_profile_is_milder_than_realesrgan(shared_data: Path) -> None:
    """The point of the profile: LR close to a clean downscale of real photos, unlike the heavy
    pipeline (medians over samples: a single draw of either can be anything in its ranges)."""
    hr = PhotoCrops(shared_data / "photos" / "val", 128).batch(16, torch.Generator().manual_seed(0))
    clean = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False)

    def median_psnr(lq: torch.Tensor) -> float:
        return float((-10 * torch.log10((lq - clean).square().mean((1, 2, 3)))).median())

    p_video = median_psnr(degrade_video(hr, VIDEO, torch.Generator().manual_seed(0)))
    p_heavy = median_psnr(degrade(hr, REALESRGAN, torch.Generator().manual_seed(0)))
    print(f"median PSNR vs a clean downscale: video {p_video:.2f} dB, realesrgan {p_heavy:.2f} dB")
    assert p_video > p_heavy + 3


def test_video_params_stay_within_the_config() -> None:
    g, cfg = torch.Generator().manual_seed(0), VIDEO
    draws = [sample_video_params(cfg, g) for _ in range(400)]
    assert all(d.blur_sigma == 0 or cfg.blur_sigma[0] <= d.blur_sigma <= cfg.blur_sigma[1] for d in draws)
    assert all(d.noise is None or cfg.noise_sigma[0] <= d.noise.strength <= cfg.noise_sigma[1] for d in draws)
    for d in draws:
        for codec, q in d.encodes:
            lo, hi = cfg.crf if codec in ("libx264", "libx265") else cfg.qscale
            assert lo <= q <= hi
    coded = sum(bool(d.encodes) for d in draws) / len(draws)
    twice = sum(len(d.encodes) == 2 for d in draws) / len(draws)
    assert abs(coded - cfg.codec_prob) < 0.06 and abs(twice - cfg.codec_prob * cfg.reencode_prob) < 0.06
    assert {c for d in draws for c, _ in d.encodes} == set(cfg.codecs)
    assert {d.resize_mode for d in draws} == set(cfg.resize_modes)


@pytest.mark.parametrize("codec", ["libx264", "libx265", "mpeg2video", "mpeg4"])
def test_every_codec_round_trips_and_quality_orders_the_error(codec: str) -> None:
    img = (photo(1, 40, 56)[0].permute(1, 2, 0) * 255).round().byte().numpy()
    lo, hi = (18, 40) if codec in ("libx264", "libx265") else (2, 25)
    good, bad = codec_round_trip(img, codec, lo), codec_round_trip(img, codec, hi)  # type: ignore[arg-type]
    assert good.shape == img.shape == bad.shape
    err = [np.abs(x.astype(int) - img).mean() for x in (good, bad)]
    print(codec, "mean abs error (code values):", err)
    assert 0 < err[0] < err[1]


def test_mix_and_unknown_profiles() -> None:
    hr = photo(6, 32, 32)
    out = degrade_profile(hr, "mix", torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 8, 8) and is_8bit(out)
    only_video = degrade_profile(
        hr, "mix", torch.Generator().manual_seed(0), video=replace(VIDEO, mix_video_prob=1.0)
    )
    only_heavy = degrade_profile(
        hr, "mix", torch.Generator().manual_seed(0), video=replace(VIDEO, mix_video_prob=0.0)
    )
    assert not torch.equal(only_video, only_heavy)
    with pytest.raises(ValueError, match="--degradation"):
        degrade_profile(hr, "vhs", torch.Generator())  # type: ignore[arg-type]


def test_chroma_420_keeps_gray_and_softens_colour_edges() -> None:
    gray = photo(1, 16, 16).mean(1, keepdim=True).expand(1, 3, 16, 16)
    assert (chroma_420(gray) - gray).abs().max() < 1e-5
    red_blue = torch.zeros(1, 3, 16, 16)
    red_blue[:, 0, :, :7] = 1.0  # a red | blue edge off the 2x2 chroma grid
    red_blue[:, 2, :, 7:] = 1.0
    out = chroma_420(red_blue)
    assert (out - red_blue).abs()[..., 6:8].max() > 0.1  # the edge column loses chroma resolution
    assert (out - red_blue).abs()[..., :4].max() < 0.02  # flat areas keep their colour


def test_no_codec_sample_is_still_420() -> None:
    hr = photo(1, 64, 64)
    d = VideoDraw(0.0, 0.0, 0.0, "area", None, ())
    lq = apply_video_draw(hr, d)
    plain = (F.interpolate(hr, scale_factor=0.25, mode="area") * 255).round() / 255
    assert lq.shape == plain.shape and not torch.equal(lq, plain) and psnr(lq, plain) > 30


def test_evaluation_clips_are_encoded_as_one_video_with_fresh_noise() -> None:
    clip = photo(1, 64, 64).expand(4, 3, 64, 64).contiguous()  # a still scene: 4 identical frames
    lq = degrade_clip(clip, VIDEO_STRENGTHS["medium"], seed=0)
    assert lq.shape == (4, 3, 16, 16) and is_8bit(lq)
    clean = VideoDraw(1.0, 0.0, 0.0, "bicubic", None, (("libx264", 26),))
    assert degrade_clip(clip, clean, seed=0).shape == (4, 3, 16, 16)
    frames = (photo(3, 32, 48).permute(0, 2, 3, 1) * 255).round().byte().numpy()
    assert encode_clip(frames, "libx264", 30).shape == frames.shape
    noisy = VideoDraw(0.0, 0.0, 0.0, "area", NoiseDraw("gaussian", 5.0, False, 0), ())
    noisy_lq = degrade_clip(clip, noisy, 0)
    assert not torch.equal(noisy_lq[0], noisy_lq[1])  # sensor noise differs from frame to frame
    assert not torch.equal(noisy_lq[0], degrade_clip(clip, noisy, 1)[0])  # and from clip to clip


def test_evaluation_clips_do_not_depend_on_what_the_heap_held(shared_data: Path) -> None:
    """The heavy clip of a val photo, whose second x264 pass at preset medium came out as one of two
    bitstreams depending on the heap (x264's AVX-512 code, on CPUs that have it), is one clip."""
    from training.clips import moving_camera_clip
    from training.images import list_images, load_image

    photo = load_image(list_images(shared_data / "photos" / "val")[0])
    clip = moving_camera_clip(photo, 8, (256, 256), seed=0)
    outs = set()
    for _ in range(8):
        junk = [np.random.default_rng(i).bytes(1 << 20) for i in range(20)]  # freed: the heap's garbage
        del junk
        outs.add(degrade_clip(clip, VIDEO_STRENGTHS["heavy"], 0).numpy().tobytes())
    assert len(outs) == 1
