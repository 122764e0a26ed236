"""The PyTorch engine: tiling against the whole frame, the out-of-memory ladder, the stream's noise and
the output contract.  CPU only except the one `gpu` test; fake steps stand in for the network wherever
the network is not the point."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gtasr_stream.engines.tiling import run_tiled
from gtasr_stream.engines.upscaler import Upscaler
from gtasr_stream.errors import UserError

SCALE = 4


def nearest(lq: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
    """Pointwise 4x step: every HR pixel depends on one LR pixel (receptive field 0)."""
    return F.interpolate(lq, scale_factor=SCALE, mode="nearest")


def box3_nearest(lq: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
    """3x3 box blur (receptive field radius 1 LR px; a crop edge is treated like an image edge), then x4."""
    return nearest(F.avg_pool2d(lq, 3, stride=1, padding=1, count_include_pad=False), None)


def nearest_plus_eps(lq: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
    assert eps is not None
    return nearest(lq, None) + eps


def smoothstep(t: float) -> float:
    return t * t * (3 - 2 * t)


def smooth_frames(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(b,3,h,w) float32 in [0,1]: bilinear upsampling of 8x coarser noise, closer to video than noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // 8, w // 8, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


# ---------------------------------------------------------------- tiling math, with exact local steps

# (h, w, tile, pad): sizes not divisible by the tile, tile > image, pad 0, tile under twice or under
# the pad (--tile 8 --tile-pad 16, --tile 1: several neighbours overlap; this crashed)
TILINGS = [
    (37, 53, 16, 8),
    (64, 64, 32, 16),
    (50, 70, 24, 12),
    (20, 30, 48, 8),
    (33, 47, 16, 0),
    (37, 53, 8, 16),
    (6, 9, 1, 16),
    (33, 47, 5, 3),
]


@pytest.mark.parametrize(("h", "w", "tile", "pad"), TILINGS)
def test_tiling_is_exact_for_a_pointwise_step(h: int, w: int, tile: int, pad: int) -> None:
    lq = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    got = run_tiled(nearest, lq, None, tile, pad, SCALE)
    ref = nearest(lq, None)
    diff = (got - ref).abs().max().item()
    print(f"{h}x{w} tile {tile} pad {pad}: max |tiled - whole| = {diff:.3g}")
    assert got.shape == ref.shape == (2, 3, SCALE * h, SCALE * w)
    assert diff <= 1e-5


def test_tile_larger_than_the_image_is_one_whole_frame_call() -> None:
    lq = torch.rand(1, 3, 20, 30)
    shapes: list[tuple[int, ...]] = []

    def spy(x: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return box3_nearest(x, eps)

    got = run_tiled(spy, lq, None, 48, 8, SCALE)
    assert shapes == [(1, 3, 20, 30)]
    assert torch.equal(got, box3_nearest(lq, None))


@pytest.mark.parametrize(("h", "w", "tile", "pad"), [t for t in TILINGS if t[3] >= 2 and t[2] < max(t[:2])])
def test_tiling_of_a_3x3_blur_is_exact_wherever_every_tile_had_the_context(
    h: int, w: int, tile: int, pad: int
) -> None:
    """A tile's outermost LR pixel (radius r = 1) was blurred without its neighbours, so its HR block
    differs from the whole frame's.  Everywhere else the tiled result must be exact; on those blocks
    the smoothstep blend gives the wrong value a weight of at most s(r / 2pad) (s(t) = 3t^2 - 2t^3, the
    total weight is >= 1), so the error is bounded by that (x2 where two tiles' edges meet)."""
    g = torch.Generator().manual_seed(h + w)
    img = torch.rand(2, 3, h, w, generator=g)
    index = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).expand(2, 1, h, w)
    lq = torch.cat([img, index], dim=1)  # (2,4,h,w): the 4th channel tells the spy where a crop lies
    boxes: list[tuple[int, int, int, int]] = []  # LR (ya, yb, xa, xb) of each crop the step saw

    def spy(x: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        first = int(x[0, 3, 0, 0])
        ya, xa = divmod(first, w)
        boxes.append((ya, ya + x.shape[-2], xa, xa + x.shape[-1]))
        return box3_nearest(x, eps)

    got = run_tiled(spy, lq, None, tile, pad, SCALE)[:, :3]
    ref = box3_nearest(img, None)
    err = (got - ref).abs().amax(dim=(0, 1))  # (4h,4w)

    r, s = 1, SCALE  # blur radius in LR px; HR px per LR px
    edge = torch.zeros(h * s, w * s, dtype=torch.bool)  # HR px a tile computed without full context
    for ya, yb, xa, xb in boxes:
        if ya > 0:
            edge[ya * s : (ya + r) * s, xa * s : xb * s] = True
        if yb < h:
            edge[(yb - r) * s : yb * s, xa * s : xb * s] = True
        if xa > 0:
            edge[ya * s : yb * s, xa * s : (xa + r) * s] = True
        if xb < w:
            edge[ya * s : yb * s, (xb - r) * s : xb * s] = True
    # Every LR pixel must lie at least `pad` px inside some crop (or at the image edge): the context.
    covered = torch.zeros(h, w, dtype=torch.bool)
    for ya, yb, xa, xb in boxes:
        covered[ya + pad * (ya > 0) : yb - pad * (yb < h), xa + pad * (xa > 0) : xb - pad * (xb < w)] = True
    assert covered.all()

    inside = err[~edge].max().item()
    at_edges = err[edge].max().item() if edge.any() else 0.0
    bound = 2 * smoothstep(r / (2 * pad))
    print(
        f"{h}x{w} tile {tile} pad {pad}: {len(boxes)} tiles, max err with full context {inside:.3g}, "
        f"at tile edges {at_edges:.3g} (bound {bound:.3g})"
    )
    assert len(boxes) > 1
    assert inside <= 1e-5
    assert at_edges <= bound


@pytest.mark.parametrize(("h", "w", "tile", "pad"), [(37, 53, 16, 8), (50, 70, 24, 12), (20, 30, 48, 8)])
@pytest.mark.parametrize("eps_batch", [1, 2])
def test_each_tile_sees_its_crop_of_the_frames_noise(
    h: int, w: int, tile: int, pad: int, eps_batch: int
) -> None:
    g = torch.Generator().manual_seed(7)
    lq = torch.rand(2, 3, h, w, generator=g)
    eps = torch.randn(eps_batch, 3, SCALE * h, SCALE * w, generator=g)
    got = run_tiled(nearest_plus_eps, lq, eps, tile, pad, SCALE)
    ref = nearest(lq, None) + eps
    diff = (got - ref).abs().max().item()
    print(f"{h}x{w} tile {tile} pad {pad} eps batch {eps_batch}: max |tiled - (up(lq) + eps)| = {diff:.3g}")
    assert got.shape == ref.shape
    assert diff <= 1e-5


# ---------------------------------------------------------------- tiling with the real network


def test_tiled_network_stays_close_to_the_whole_frame(tiny_weights: Path) -> None:
    """GroupNorm takes statistics over the whole input, so a tile is normalised differently from the
    frame: tiles differ by a tolerance, not by rounding.  Measured (tiny random-weight model, this frame,
    2-core CPU): max 0.0117, mean 0.00083, PSNR 58.8 dB; over ten frame seeds the mean ranged 0.00065
    to 0.0009 and the seam/elsewhere ratio 0.91 to 1.20.  For scale: dropping the noise moves the output
    by 0.015 on average, so a tile given the wrong crop of eps would fail the mean bound."""
    img = smooth_frames(1, 96, 128)
    whole = Upscaler(weights=tiny_weights, device="cpu", noise="fixed")(img)
    tiled = Upscaler(weights=tiny_weights, device="cpu", noise="fixed", tile=48, tile_pad=16)(img)
    d = (tiled - whole).abs()[0]  # (3,384,512)
    psnr = 10 * torch.log10(1 / (tiled - whole).pow(2).mean()).item()

    # Overlap bands (LR): tile cores start at rows 0, 48 and columns 0, 48, 80 (the last flush with the
    # edge), each crop reaching 16 px further, so crops overlap in rows 32..64 and columns 32..96.
    band = torch.zeros(96, 128, dtype=torch.bool)
    band[32:64, :] = True
    band[:, 32:96] = True
    band = band.repeat_interleave(SCALE, 0).repeat_interleave(SCALE, 1)
    seam, rest = d[:, band].mean().item(), d[:, ~band].mean().item()
    print(
        f"tiled vs whole: max {d.max().item():.4g} mean {d.mean().item():.4g} PSNR {psnr:.2f} dB; "
        f"mean in overlaps {seam:.4g}, elsewhere {rest:.4g} (ratio {seam / rest:.3f})"
    )
    assert d.mean().item() < 2e-3
    assert d.max().item() < 0.03
    assert psnr > 52
    assert seam < 1.5 * rest


# ---------------------------------------------------------------- the out-of-memory ladder


class FakeStep:
    """Nearest x4 that raises an out-of-memory error above a budget of B*h*w LR pixels per call."""

    def __init__(
        self,
        budget: int,
        error: Callable[[], Exception] = lambda: torch.OutOfMemoryError("CUDA out of memory"),
    ):
        self.budget, self.error = budget, error
        self.calls: list[tuple[int, int, int]] = []  # (B, h, w) of every call, failed ones too

    def __call__(self, lq: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        self.calls.append((lq.shape[0], lq.shape[-2], lq.shape[-1]))
        assert len(self.calls) < 200, "the OOM ladder does not terminate"
        if lq.shape[0] * lq.shape[-2] * lq.shape[-1] > self.budget:
            raise self.error()
        return nearest(lq, eps)


def nearest_rgb(rgb: torch.Tensor) -> torch.Tensor:
    return F.interpolate(rgb, scale_factor=SCALE, mode="nearest")


def fake_upscaler(weights: Path, step: FakeStep, warnings: list[str], **kw: int) -> Upscaler:
    up = Upscaler(weights=weights, device="cpu", noise="none", on_warning=warnings.append, **kw)
    up.step = step
    return up


@pytest.mark.parametrize(("frames_that_fit", "batch"), [(8, 8), (5, 4), (3, 2), (1, 1)])
def test_oom_halves_the_batch_to_the_largest_that_fits(
    tiny_weights: Path, frames_that_fit: int, batch: int
) -> None:
    h, w = 40, 56
    frames = torch.rand(8, 3, h, w, generator=torch.Generator().manual_seed(1))
    step, warnings = FakeStep(frames_that_fit * h * w), []
    up = fake_upscaler(tiny_weights, step, warnings, batch=8)

    out = up(frames)
    assert up.batch == batch
    assert up.tile == 0
    halvings = [8 // 2**i for i in range(1, 4) if 8 // 2**i >= batch]
    assert warnings == [f"out of GPU memory: batch reduced to {n}" for n in halvings]
    assert [c[0] for c in step.calls if c[0] <= batch] == [batch] * (8 // batch)  # the successful calls
    torch.testing.assert_close(out, nearest_rgb(frames), atol=1e-6, rtol=0)  # all 8, in order

    up(frames)  # the ladder is remembered: no new failures, no new warnings
    assert len(warnings) == len(halvings)
    assert all(b * hh * ww <= step.budget for b, hh, ww in step.calls[-(8 // batch) :])


@pytest.mark.parametrize(
    "error",
    [lambda: torch.OutOfMemoryError("CUDA out of memory"), lambda: RuntimeError("CUDA error: out of memory")],
    ids=["OutOfMemoryError", "RuntimeError"],
)
def test_oom_at_batch_1_tiles_then_halves_the_tile(
    tiny_weights: Path, error: Callable[[], Exception]
) -> None:
    frame = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    # 64-px tiles need 80x80 = 6400 LR px crops with the 16-px pad; 32-px tiles need at most 64x64 = 4096
    step, warnings = FakeStep(5000, error), []
    up = fake_upscaler(tiny_weights, step, warnings, batch=2)

    out = up(frame)
    assert (up.batch, up.tile) == (1, 32)
    assert warnings == [
        "out of GPU memory: batch reduced to 1",
        "out of GPU memory at batch 1: tiling with 64-px tiles",
        "out of GPU memory: tiles reduced to 32 px",
    ]
    diff = (out - nearest_rgb(frame)).abs().max().item()
    print(f"tiled after OOM vs whole-frame nearest: max diff {diff:.3g}")
    assert diff <= 1e-5


@pytest.mark.parametrize(("h", "w"), [(96, 128), (32, 32), (20, 24)])
def test_oom_with_no_way_out_is_a_user_error(tiny_weights: Path, h: int, w: int) -> None:
    """Includes frames no larger than the smallest tile, where tiling cannot split anything."""
    step, warnings = FakeStep(0), []
    up = fake_upscaler(tiny_weights, step, warnings, batch=4)
    with pytest.raises(UserError, match="out of GPU memory"):
        up(torch.rand(2, 3, h, w))
    print(f"{h}x{w}: {len(step.calls)} attempts, warnings {warnings}")
    assert warnings[0] == "out of GPU memory: batch reduced to 2"
    assert len(warnings) == len(set(warnings))  # once per step down


@pytest.mark.parametrize("error", [ValueError("bad shape"), RuntimeError("CUDA error: device-side assert")])
def test_other_errors_propagate_without_retry(tiny_weights: Path, error: Exception) -> None:
    def step(lq: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        calls.append(lq.shape[0])
        raise error

    calls: list[int] = []
    warnings: list[str] = []
    up = Upscaler(weights=tiny_weights, device="cpu", batch=4, on_warning=warnings.append)
    up.step = step
    with pytest.raises(type(error)) as info:
        up(torch.rand(4, 3, 16, 16))
    assert info.value is error
    assert calls == [4]
    assert (up.batch, up.tile, warnings) == (4, 0, [])


# ---------------------------------------------------------------- the stream's noise


def test_fixed_noise_is_one_tensor_per_size_and_seed(tiny_weights: Path) -> None:
    up = Upscaler(weights=tiny_weights, device="cpu", noise="fixed", seed=3)
    a = up.noise_for(2, 64, 48)
    assert a is not None
    assert (a.shape, a.dtype) == ((1, 3, 64, 48), torch.float32)
    for b in (1, 2, 5):
        n = up.noise_for(b, 64, 48)
        assert n is not None and torch.equal(n, a)
    up(torch.rand(1, 3, 16, 12))  # a frame in between draws nothing new
    assert torch.equal(up.noise_for(1, 64, 48), a)  # type: ignore[arg-type]

    fresh_instance = Upscaler(weights=tiny_weights, device="cpu", noise="fixed", seed=3)
    assert torch.equal(up.noise_for(1, 32, 24), fresh_instance.noise_for(1, 32, 24))  # type: ignore[arg-type]
    same = fresh_instance.noise_for(1, 64, 48)  # nor on what sizes came before
    other = Upscaler(weights=tiny_weights, device="cpu", noise="fixed", seed=4).noise_for(1, 64, 48)
    assert same is not None and other is not None
    assert torch.equal(same, a)
    assert (other - a).abs().mean().item() > 0.5  # two independent N(0,1): mean |diff| ~ 1.13


def test_fresh_noise_is_new_per_call_and_reproducible_from_the_seed(tiny_weights: Path) -> None:
    def draws(seed: int) -> list[torch.Tensor]:
        up = Upscaler(weights=tiny_weights, device="cpu", noise="fresh", seed=seed)
        out = [up.noise_for(2, 32, 40) for _ in range(3)]
        assert all(n is not None for n in out)
        return out  # type: ignore[return-value]

    first, again, other = draws(5), draws(5), draws(6)
    assert first[0].shape == (2, 3, 32, 40)
    assert (first[0][0] - first[0][1]).abs().mean().item() > 0.5  # per frame, not per batch
    assert (first[0] - first[1]).abs().mean().item() > 0.5
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert (first[0] - other[0]).abs().mean().item() > 0.5


def test_no_noise(tiny_weights: Path) -> None:
    assert Upscaler(weights=tiny_weights, device="cpu", noise="none").noise_for(2, 32, 32) is None


def test_fixed_noise_output_is_deterministic_and_fresh_is_not(tiny_weights: Path) -> None:
    frame = smooth_frames(1, 32, 40, seed=4)
    pair = torch.cat([frame, frame])  # the same frame twice in one batch

    # fp32: the batch-1-vs-2 bound below is fp32 rounding (bf16 autocast, the default on AMX, is 3.7e-4)
    fixed = Upscaler(weights=tiny_weights, device="cpu", precision="fp32", noise="fixed")
    a, b = fixed(pair), fixed(frame)
    assert torch.equal(a[0], a[1])
    assert torch.equal(fixed(pair), a)
    assert torch.equal(fixed(frame), b)
    # batch 2 and batch 1 take different CPU kernels: rounding apart (measured max 1.2e-7)
    across = (a[:1] - b).abs().max().item()
    print(f"fixed noise: same frame at batch 2 vs batch 1, max |diff| {across:.3g}")
    assert across < 1e-5

    fresh = Upscaler(weights=tiny_weights, device="cpu", noise="fresh")
    c, d = fresh(pair), fresh(frame)
    within, across = (c[0] - c[1]).abs().mean().item(), (c[:1] - d).abs().mean().item()
    print(f"fresh noise: mean |diff| within a batch {within:.4g}, between calls {across:.4g}")
    assert within > 1e-3  # measured 0.017 on this model
    assert across > 1e-3


# ---------------------------------------------------------------- output contract


def test_output_shape_dtype_and_range(tiny_weights: Path) -> None:
    up = Upscaler(weights=tiny_weights, device="cpu")
    out = up(torch.rand(2, 3, 37, 23))
    assert (out.shape, out.dtype, out.device.type) == ((2, 3, 148, 92), torch.float32, "cpu")
    assert out.min().item() >= 0 and out.max().item() <= 1


def test_bf16_on_cpu_stays_close_to_fp32(tiny_weights: Path) -> None:
    """bf16 keeps 8 significant bits: each op rounds by up to 2^-9 relative, and how many roundings
    survive depends on the CPU's kernels (AMX/AVX512-BF16 accumulate in fp32, AVX2 rounds after each
    op).  Measured: max 0.0014, mean 0.00018 on an AMX Xeon; max 0.0060, mean 0.00099 with AVX2
    kernels (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2).  The bounds are what a video shows:
    under one 8-bit code value (1/255) on average, a few at most."""
    frames = torch.rand(2, 3, 37, 23, generator=torch.Generator().manual_seed(6))
    ref = Upscaler(weights=tiny_weights, device="cpu", precision="fp32")(frames)
    up = Upscaler(weights=tiny_weights, device="cpu", precision="bf16")
    assert up.dtype == torch.bfloat16 and up.autocast  # autocast over float32 weights
    assert next(up.model.parameters()).dtype == torch.float32
    out = up(frames)
    d = (out - ref).abs()
    print(f"bf16 vs fp32 on CPU: max {d.max().item():.4g} mean {d.mean().item():.4g}")
    assert out.dtype == torch.float32
    assert d.mean().item() < 1 / 255
    assert d.max().item() < 5 / 255


@pytest.mark.parametrize("device", ["tpu", "cuda:banana"])
def test_unknown_device_is_a_user_error_naming_the_flag(tiny_weights: Path, device: str) -> None:
    with pytest.raises(UserError, match="--device"):
        Upscaler(weights=tiny_weights, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_user_error_naming_the_flag(tiny_weights: Path) -> None:
    with pytest.raises(UserError, match="--device cuda"):
        Upscaler(weights=tiny_weights, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_matches_cpu_fp32(tiny_weights: Path) -> None:
    frames = smooth_frames(2, 64, 96, seed=8)
    ref = Upscaler(weights=tiny_weights, device="cpu", precision="fp32")(frames)
    up = Upscaler(weights=tiny_weights, device="cuda", precision="fp16")
    out = up(frames.cuda()).cpu()
    d = (out - ref).abs()
    print(f"CUDA fp16 vs CPU fp32: max {d.max().item():.4g} mean {d.mean().item():.4g}")
    assert out.dtype == torch.float32
    assert d.mean().item() < 1e-2
    assert d.max().item() < 0.1


def test_noise_auto_follows_the_weights_metadata(tiny_weights: Path, tmp_path: Path) -> None:
    """--noise auto (the default) takes what the weights' evaluation chose, else one fixed noise."""
    from gtasr_stream.weights import load_weights, save_weights

    net, _ = load_weights(tiny_weights)
    chosen = tmp_path / "chosen.safetensors"
    save_weights(chosen, net, "tiny", "test", extra={"noise": "none"})
    assert Upscaler(weights=chosen, device="cpu").noise == "none"
    assert Upscaler(weights=chosen, device="cpu", noise="fresh").noise == "fresh"  # the flag wins
    assert Upscaler(weights=tiny_weights, device="cpu").noise == "fixed"  # no recommendation
    odd = tmp_path / "odd.safetensors"
    save_weights(odd, net, "tiny", "test", extra={"noise": "sometimes"})
    with pytest.raises(UserError, match="pass --noise"):
        Upscaler(weights=odd, device="cpu")
    assert Upscaler(weights=odd, device="cpu", noise="none").noise == "none"


def test_sharpen_is_the_unsharp_mask_of_the_output_and_defaults_to_the_weights_own(
    tiny_weights: Path, tmp_path: Path
) -> None:
    """Upscaler(sharpen=S) is unsharp(output, S), after the clamp, the same for every batch split;
    None reads the weights' 'sharpen' metadata (none there: 0); out of [0, 2] is one UserError."""
    from gtasr_stream.model.sharpen import unsharp
    from gtasr_stream.weights import load_weights, save_weights

    rgb = torch.rand(3, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    plain = Upscaler(weights=tiny_weights, device="cpu", precision="fp32", noise="none")
    assert plain.sharpen == 0.0
    base = plain(rgb)
    sharp = Upscaler(weights=tiny_weights, device="cpu", precision="fp32", noise="none", sharpen=0.5, batch=2)
    out = sharp(rgb)
    assert torch.allclose(out, unsharp(base, 0.5), atol=1e-6) and not torch.allclose(out, base, atol=1e-3)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    net, _ = load_weights(tiny_weights)
    tagged = tmp_path / "tagged.safetensors"
    save_weights(tagged, net, "tiny", "test", extra={"sharpen": "0.5"})
    auto = Upscaler(weights=tagged, device="cpu", precision="fp32", noise="none")
    assert auto.sharpen == 0.5 and torch.allclose(auto(rgb), out, atol=1e-6)
    save_weights(tagged, net, "tiny", "test", extra={"sharpen": "3"})
    with pytest.raises(UserError, match=r"sharpen must be in \[0, 2\]: the weights' metadata asks for 3"):
        Upscaler(weights=tagged, device="cpu", precision="fp32")
