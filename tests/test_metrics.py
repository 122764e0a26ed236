"""PSNR-Y / SSIM-Y / flicker (training/metrics.py), moving-camera clips (training/clips.py), photo I/O."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from training import clips
from training.clips import moving_camera_clip
from training.images import list_images, load_image
from training.metrics import flicker, psnr_y, rgb_to_y, ssim_y


def smooth_images(b: int, h: int, w: int, seed: int, cell: int = 8) -> torch.Tensor:
    """(b,3,h,w) float64 in [0.1,0.9]: bilinear-upsampled noise, so SSIM's structure terms matter."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // cell + 1, w // cell + 1, generator=g, dtype=torch.float64)
    up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return 0.1 + 0.8 * up


# ---------------------------------------------------------------- an independent numpy reference (BasicSR)
def np_y255(img: np.ndarray) -> np.ndarray:
    """(H,W,3) RGB in [0,1] -> (H,W) Y in [16,235], MATLAB rgb2ycbcr."""
    return img @ np.array([65.481, 128.553, 24.966]) + 16.0


def np_crop_y(a: np.ndarray, crop: int) -> np.ndarray:
    h, w = a.shape[:2]
    return np_y255(a)[crop : h - crop, crop : w - crop]


def np_psnr(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    ya, yb = np_crop_y(a, crop), np_crop_y(b, crop)
    return float(10 * np.log10(255.0**2 / np.mean((ya - yb) ** 2)))


def np_ssim(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    ya, yb = np_crop_y(a, crop), np_crop_y(b, crop)
    k = np.exp(-(np.linspace(-5, 5, 11) ** 2) / (2 * 1.5**2))
    win = np.outer(k, k) / np.outer(k, k).sum()

    def filt(img: np.ndarray) -> np.ndarray:  # cv2.filter2D(img, -1, win)[5:-5, 5:-5]
        return np.einsum("ijkl,kl->ij", sliding_window_view(img, (11, 11)), win)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = filt(ya), filt(yb)
    va, vb, cov = filt(ya * ya) - ma**2, filt(yb * yb) - mb**2, filt(ya * yb) - ma * mb
    m = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return float(m.mean())


# ------------------------------------------------------------------------------------------ luma
def test_rgb_to_y_matches_bt601_studio_range() -> None:
    x = torch.tensor(
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.2, 0.5, 0.9]], dtype=torch.float64
    )
    y = rgb_to_y(x.T.reshape(1, 3, 1, 4)).flatten() * 255  # (4,) on the 0-255 scale
    want = torch.tensor(
        [16.0, 235.0, 16 + 65.481, 16 + 0.2 * 65.481 + 0.5 * 128.553 + 0.9 * 24.966], dtype=torch.float64
    )
    print("max |Y - BT.601| (0-255):", (y - want).abs().max().item())
    assert torch.allclose(y, want, atol=1e-9)


# ------------------------------------------------------------------------------------------ PSNR
def test_psnr_of_identical_images_is_infinite() -> None:
    x = smooth_images(2, 32, 32, seed=0).float()
    assert torch.isinf(psnr_y(x, x.clone())).all()


def test_psnr_of_a_one_level_luma_offset_is_48_13_db() -> None:
    x = smooth_images(2, 40, 48, seed=1)
    # +d on R, G and B moves Y by 219 d / 255 (the weights sum to 219); 1 level of 255 needs d = 1/219
    y = x + torch.tensor([1.0, 2.0]).double().view(2, 1, 1, 1) / 219
    got = psnr_y(x, y)
    want = torch.tensor(
        [20 * math.log10(255), 20 * math.log10(255 / 2)], dtype=torch.float64
    )  # 48.13, 42.11 dB
    print("psnr_y:", got.tolist(), "analytic:", want.tolist(), "max diff:", (got - want).abs().max().item())
    assert got.shape == (2,)
    assert torch.allclose(got, want, atol=1e-9)


def test_psnr_crop_ignores_the_border() -> None:
    x = smooth_images(1, 32, 32, seed=2)
    y = x.clone()
    y[..., :4, :] += 0.05  # only the 4-px top border differs
    assert torch.isinf(psnr_y(x, y, crop=4)).all()
    assert torch.isfinite(psnr_y(x, y, crop=3)).all()
    assert torch.isfinite(psnr_y(x, y, crop=0)).all()


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_y(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 30))
    with pytest.raises(ValueError, match="too small"):
        ssim_y(torch.zeros(1, 3, 18, 32), torch.zeros(1, 3, 18, 32))


# ------------------------------------------------------------------------------------------ SSIM
def test_ssim_of_identical_images_is_one() -> None:
    x = smooth_images(2, 48, 48, seed=3).float()
    got = ssim_y(x, x.clone())
    print("1 - ssim_y(x, x):", (1 - got).abs().max().item())
    assert got.shape == (2,)
    assert torch.allclose(got, torch.ones(2), atol=1e-6)


def test_ssim_decreases_with_noise() -> None:
    x = smooth_images(1, 48, 48, seed=4)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    scores = [float(ssim_y(x, x + s * noise)) for s in (0.01, 0.03, 0.1)]
    print("ssim_y at noise 0.01, 0.03, 0.1:", scores)
    assert 1 > scores[0] > scores[1] > scores[2] > 0


def test_psnr_and_ssim_match_numpy_reference() -> None:
    x = smooth_images(1, 40, 52, seed=6)
    g = torch.Generator().manual_seed(7)
    y = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    a, b = (t[0].permute(1, 2, 0).numpy() for t in (x, y))  # (H,W,3) in [0,1]
    for crop in (0, 4):
        p, s = float(psnr_y(x, y, crop)), float(ssim_y(x, y, crop))
        p_ref, s_ref = np_psnr(a, b, crop), np_ssim(a, b, crop)
        print(
            f"crop {crop}: psnr {p:.6f} vs {p_ref:.6f} (diff {abs(p - p_ref):.2g}), ssim {s:.8f} vs {s_ref:.8f} (diff {abs(s - s_ref):.2g})"
        )
        assert abs(p - p_ref) < 1e-9
        assert abs(s - s_ref) < 1e-9
    # the float32 path agrees with the float64 one to float32 rounding
    p32, s32 = float(psnr_y(x.float(), y.float())), float(ssim_y(x.float(), y.float()))
    print(
        f"float32: psnr diff {abs(p32 - np_psnr(a, b, 4)):.2g}, ssim diff {abs(s32 - np_ssim(a, b, 4)):.2g}"
    )
    assert abs(p32 - np_psnr(a, b, 4)) < 1e-3
    assert abs(s32 - np_ssim(a, b, 4)) < 1e-5


# ---------------------------------------------------------------------------------------- flicker
def test_flicker_is_zero_for_a_constant_error() -> None:
    truth = smooth_images(6, 24, 24, seed=8).float()  # (T,3,H,W)
    got = flicker(truth - 0.07, truth)
    print("flicker of a constant offset:", got)
    assert got < 1e-7


def test_flicker_grows_with_frame_to_frame_error() -> None:
    truth = smooth_images(6, 24, 24, seed=9)
    sign = torch.tensor([(-1.0) ** t for t in range(6)]).double().view(6, 1, 1, 1)
    small, large = flicker(truth + 0.01 * sign, truth), flicker(truth + 0.04 * sign, truth)
    print(f"flicker of +-0.01: {small:.6f} (analytic 0.02), of +-0.04: {large:.6f} (analytic 0.08)")
    assert small == pytest.approx(0.02, abs=1e-12)
    assert large == pytest.approx(0.08, abs=1e-12)
    # a still output of a moving truth flickers as much as the truth moves
    still = truth[:1].expand_as(truth)
    assert flicker(still, truth) == pytest.approx(float((truth[1:] - truth[:-1]).abs().mean()), rel=1e-12)


def test_flicker_rejects_single_frames_and_mismatches() -> None:
    with pytest.raises(ValueError, match="T >= 2"):
        flicker(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        flicker(torch.zeros(3, 3, 8, 8), torch.zeros(4, 3, 8, 8))


# ----------------------------------------------------------------------------------- moving camera
def best_shift_error(a: torch.Tensor, b: torch.Tensor, r: int = 6) -> tuple[float, tuple[int, int]]:
    """The smallest mean |a - shifted b| over integer shifts up to r px, on the overlap; and that shift."""
    h, w = a.shape[-2:]
    best = (math.inf, (0, 0))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            pa = a[..., r : h - r, r : w - r]
            pb = b[..., r + dy : h - r + dy, r + dx : w - r + dx]
            best = min(best, (float((pa - pb).abs().mean()), (dy, dx)))
    return best


def test_clip_shape_range_and_determinism() -> None:
    photo = smooth_images(1, 192, 256, seed=10)[0].float()  # (3,192,256)
    clip = moving_camera_clip(photo, frames=8, size=(64, 96), seed=3)
    assert clip.shape == (8, 3, 64, 96)
    assert clip.dtype == torch.float32
    assert float(clip.min()) >= 0 and float(clip.max()) <= 1
    assert torch.equal(clip, moving_camera_clip(photo, frames=8, size=(64, 96), seed=3))
    assert not torch.equal(clip, moving_camera_clip(photo, frames=8, size=(64, 96), seed=4))


def test_consecutive_frames_differ_by_a_small_motion() -> None:
    photo = smooth_images(1, 192, 256, seed=11, cell=6)[0].float()
    for seed in range(3):
        clip = moving_camera_clip(photo, frames=6, size=(64, 96), seed=seed)
        far, _ = best_shift_error(clip[0], moving_camera_clip(photo, 1, (64, 96), seed=seed + 100)[0], r=0)
        for t in range(1, 6):
            still, _ = best_shift_error(clip[t], clip[t - 1], r=0)
            aligned, shift = best_shift_error(clip[t], clip[t - 1])
            print(
                f"seed {seed} t {t}: |f_t - f_t-1| {still:.4f}, after shift {shift} {aligned:.4f}, unrelated {far:.4f}"
            )
            assert still > 1e-3  # the camera moves
            assert aligned < 0.5 * still and aligned < 0.2 * far  # ... by a few pixels only
            assert max(map(abs, shift)) <= 5


def coordinate_photo(hp: int, wp: int) -> torch.Tensor:
    """(3,hp,wp) float64 whose R, G hold each pixel centre's x / wp, y / hp: bilinear sampling is exact on it."""
    x = (torch.arange(wp, dtype=torch.float64) + 0.5) / wp
    y = (torch.arange(hp, dtype=torch.float64) + 0.5) / hp
    return torch.stack([x.expand(hp, wp), y[:, None].expand(hp, wp), torch.full((hp, wp), 0.5).double()])


def camera_path(clip: torch.Tensor, hp: int, wp: int) -> tuple[torch.Tensor, ...]:
    """From a clip of coordinate_photo: the photo coordinates u, v (T,H,W), centres (T,2), scale, angle (T,)."""
    u, v = clip[:, 0] * wp, clip[:, 1] * hp  # where each output pixel was sampled, photo px
    centre = torch.stack([u.mean((1, 2)), v.mean((1, 2))], 1)
    w = clip.shape[-1]
    dx = (u[:, :, -1] - u[:, :, 0]).mean(1) / (w - 1)  # one output px to the right, in photo px
    dy = (v[:, :, -1] - v[:, :, 0]).mean(1) / (w - 1)
    return u, v, centre, torch.hypot(dx, dy), torch.atan2(dy, dx)


def test_clip_camera_moves_as_documented() -> None:
    hp, wp = 300, 400
    photo = coordinate_photo(hp, wp)
    for seed in range(4):
        clip = moving_camera_clip(photo, frames=10, size=(64, 96), seed=seed)
        assert clip.dtype == torch.float64
        u, v, centre, scale, angle = camera_path(clip, hp, wp)
        speed = (centre[1:] - centre[:-1]).norm(dim=1)
        along = (u[:, :, 1:] - u[:, :, :-1]).mean((1, 2))  # (T,) photo x per output column
        print(
            f"seed {seed}: pan {speed.min():.2f}-{speed.max():.2f} px/frame, zoom {scale[-1] - 1:+.2%}, "
            f"rotation {math.degrees(angle[-1]):+.2f} deg, x along rows {float(along.min()):.3f} px"
        )
        assert (along > 0.9).all()  # rows of the clip run along the photo's x axis
        assert ((speed > 1 - 1e-6) & (speed < 4 + 1e-6)).all()  # a few px/frame
        assert abs(float(scale[0]) - 1) < 1e-9 and abs(float(angle[0])) < 1e-9
        assert (scale.log().abs() <= 0.05 + 1e-9).all()  # slight zoom
        assert (angle.abs() <= math.radians(2) + 1e-9).all()  # small rotation
        assert float(u.min()) > 0.5 and float(u.max()) < wp - 0.5  # inside the photo
        assert float(v.min()) > 0.5 and float(v.max()) < hp - 0.5


def test_clip_never_samples_outside_the_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    # a white photo: any sample reaching past the edge would pull in the zero padding and darken a pixel
    for hp, wp in ((100, 140), (70, 100), (66, 98)):  # roomy, tight (motion shrunk), a still crop
        for seed in range(8):
            clip = moving_camera_clip(torch.ones(3, hp, wp), frames=16, size=(64, 96), seed=seed)
            lowest = float(clip.min())
            assert lowest > 1 - 1e-6, f"photo {hp}x{wp}, seed {seed}: min {lowest}"
    # every combination of draws at the ends of their ranges: fastest pan, most zoom and rotation,
    # the path pressed against an edge (the draws are speed, heading, turn, zoom, rotation, x0, y0)
    for ends in itertools.product((0, 1), repeat=7):
        draws = iter(ends)
        monkeypatch.setattr(clips, "_uniform", lambda g, lo, hi, d=draws: hi if next(d, 1) else lo)
        for hp, wp in ((100, 140), (300, 400)):
            lowest = float(moving_camera_clip(torch.ones(3, hp, wp), frames=16, size=(64, 96), seed=0).min())
            assert lowest > 1 - 1e-6, f"extreme draws {ends}, photo {hp}x{wp}: min {lowest}"


def test_clip_in_a_tight_photo_still_moves() -> None:
    hp, wp = 80, 120  # room for a few px of pan only: the motion is shrunk, not dropped
    for seed in range(4):
        clip = moving_camera_clip(coordinate_photo(hp, wp), frames=8, size=(64, 96), seed=seed)
        u, v, centre, _, _ = camera_path(clip, hp, wp)
        travel = float((centre[1:] - centre[:-1]).norm(dim=1).sum())
        print(f"seed {seed}: camera travels {travel:.2f} px")
        assert travel > 1
        assert float(u.min()) > 0.5 and float(u.max()) < wp - 0.5
        assert float(v.min()) > 0.5 and float(v.max()) < hp - 0.5


def test_clip_rejects_a_photo_smaller_than_the_clip() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        moving_camera_clip(torch.ones(3, 65, 200), frames=4, size=(64, 96), seed=0)


# ------------------------------------------------------------------------------------------ images
def test_list_and_load_images(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "b.png")
    Image.fromarray(rgb).save(tmp_path / "a.JPG", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()
    assert list_images(tmp_path) == [tmp_path / "a.JPG", tmp_path / "b.png"]
    img = load_image(tmp_path / "b.png")
    assert img.shape == (3, 5, 7) and img.dtype == torch.float32
    assert torch.equal(img, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    with pytest.raises(NotADirectoryError, match=r"notes\.txt"):
        list_images(tmp_path / "notes.txt")


def test_clip_from_a_shared_photo(shared_data: Path) -> None:
    paths = list_images(shared_data / "photos" / "val")
    assert len(paths) >= 1 and paths == sorted(paths)
    photo = load_image(paths[0])  # (3,H,W)
    assert photo.shape[0] == 3 and float(photo.min()) >= 0 and float(photo.max()) <= 1
    clip = moving_camera_clip(photo, frames=5, size=(96, 128), seed=0)
    steps = [float((clip[t] - clip[t - 1]).abs().mean()) for t in range(1, 5)]
    print(f"{paths[0].name}: mean |f_t - f_t-1| = {[round(s, 4) for s in steps]}")
    assert clip.shape == (5, 3, 96, 128)
    assert all(0 < s < 0.2 for s in steps)


# ---------------------------------------------------------------- no-reference: sharpness, periodicity
def test_sharpness_falls_with_blur() -> None:
    from training.metrics import sharpness

    x = smooth_images(2, 64, 64, seed=0, cell=2).float()
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    assert sharpness(blurred) < 0.8 * sharpness(x)
    assert sharpness(torch.full((1, 3, 16, 16), 0.5)) == 0.0


def test_periodicity_exposes_a_faint_4px_grid() -> None:
    """A 1-code-value pattern repeating every 4 px (what a 4x head can leave) scores far above the
    image without it; the score is about shift, not content, so a shifted image scores alike."""
    from training.metrics import periodicity

    x = smooth_images(2, 128, 128, seed=1, cell=4).float()
    pattern = torch.tensor([1.0, -1.0, 0.5, -0.5]) / 255
    grid = pattern.repeat(32)[None].expand(128, 128)  # (H,W): every row the same 4-px period
    with_grid = (x + grid).clamp(0, 1)
    clean, gridded = periodicity(x), periodicity(with_grid)
    print(f"periodicity: clean {clean:.2f}, with a 1/255 grid {gridded:.2f}")
    assert gridded > 5 * clean
    assert periodicity(x.roll(3, -1)) == pytest.approx(clean, rel=0.5)
    with pytest.raises(ValueError, match="multiples of 4"):
        periodicity(torch.rand(1, 3, 30, 32))


def test_periodicity_settles_without_a_grid() -> None:
    """Noise has no grid: about 1 on every sample. A single periodogram's peak over the median of its
    neighbours averages 1/ln 2 = 1.44 there and scatters by as much: the estimate it used to be."""
    from training.metrics import periodicity

    scores = [
        periodicity(torch.rand(4, 3, 512, 512, generator=torch.Generator().manual_seed(s))) for s in range(4)
    ]
    print("periodicity of noise:", [round(s, 3) for s in scores])
    assert all(0.85 < s < 1.2 for s in scores) and max(scores) - min(scores) < 0.2
