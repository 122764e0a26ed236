"""The network: the paper preset's size, shapes of every preset, and input validation."""

from __future__ import annotations

import pytest
import torch

from gtasr_stream.model import PRESETS, GTASRNet, build_network
from gtasr_stream.model.network import GridNotch, count_macs, group_norm


@pytest.fixture(scope="module")
def paper() -> GTASRNet:
    torch.manual_seed(0)
    return build_network("paper").eval()


def randomise(net: GTASRNet, std: float = 0.05) -> None:
    """Give the zero-initialised layers weights too, so every path reaches the output."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * std)


def test_paper_parameter_count_matches_publication(paper: GTASRNet) -> None:
    n = sum(p.numel() for p in paper.parameters())
    print(f"paper preset: {n / 1e6:.3f} M parameters (published 171.5 M)")
    assert abs(n - 171.5e6) / 171.5e6 < 0.01


def test_paper_has_21_attention_wrappers_and_multiple_64(paper: GTASRNet) -> None:
    wrappers = [m for m in paper.modules() if type(m).__name__ == "SwinWrapper"]
    assert len(wrappers) == 21
    assert paper.cfg.multiple == 64


def test_paper_forward_shape_and_compute(paper: GTASRNet) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    lq = torch.randn(1, 3, 64, 64)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = paper(x, torch.tensor([0.3]), lq)
    assert out.shape == (1, 3, 256, 256)
    assert torch.isfinite(out).all()
    # METHOD.md: about 0.61 TMAC for 128x128 LR; compute is linear in pixels.
    tmac_128 = counter.get_total_flops() / 2 * 4 / 1e12
    print(f"paper preset: {tmac_128:.3f} TMAC at 128x128 LR (published about 0.61)")
    assert 0.60 <= tmac_128 <= 0.62


def test_small_presets_are_within_compute_budget() -> None:
    # MACs per 960x540 LR frame (scaled from 64x64): small 0.3-0.6 TMAC, tiny 30-80 GMAC.
    budgets = {"small": (300e9, 600e9), "tiny": (30e9, 80e9)}
    for name, (lo, hi) in budgets.items():
        net = build_network(name)
        m = net.cfg.multiple
        macs = count_macs(net, (m, m)) / (m * m) * 960 * 540
        print(f"{name}: {macs / 1e9:.1f} GMAC per 960x540 frame")
        assert lo <= macs <= hi, (name, macs)


@pytest.mark.parametrize("preset", ["small", "tiny"])
def test_forward_shape_on_rectangular_multiples(preset: str) -> None:
    torch.manual_seed(0)
    net = build_network(preset).eval()
    randomise(net)
    m = net.cfg.multiple
    lq = torch.randn(2, 3, m, 2 * m)
    x = torch.randn(2, 3, 4 * m, 8 * m)
    with torch.no_grad():
        out = net(x, torch.tensor([-1.5, 0.0]), lq)
        out_t = net(x, torch.tensor([0.0, 0.0]), lq)
    assert out.shape == (2, 3, 4 * m, 8 * m)
    assert torch.isfinite(out).all()
    # c_noise reaches the output (the time embedding is wired): sample 0 changes, sample 1 not.
    assert not torch.allclose(out[0], out_t[0])
    torch.testing.assert_close(out[1], out_t[1])


def test_forward_rejects_sizes_off_the_multiple() -> None:
    net = build_network("tiny")
    m = net.cfg.multiple
    with pytest.raises(AssertionError):
        net(torch.zeros(1, 3, 4 * (m + 8), 4 * m), torch.zeros(1), torch.zeros(1, 3, m + 8, m))


def test_multiples_of_presets() -> None:
    assert {k: v.multiple for k, v in PRESETS.items()} == {"paper": 64, "small": 64, "tiny": 32}


def test_unknown_preset_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="unknown network preset 'huge'; allowed: paper, small, tiny"):
        build_network("huge")


@pytest.mark.parametrize(("channels", "groups"), [(192, 32), (576, 32), (16, 4), (48, 12), (96, 24)])
def test_group_norm_groups_divide_channels(channels: int, groups: int) -> None:
    assert group_norm(channels, 32).num_groups == groups


def test_attention_is_window_local_with_relative_bias() -> None:
    # Without the (image-wide) GroupNorms, changing one 8x8 window changes no other window.
    from gtasr_stream.model.network import SwinBlock

    torch.manual_seed(0)
    block = SwinBlock(64, PRESETS["tiny"]).eval()
    block.norm1, block.norm2 = torch.nn.Identity(), torch.nn.Identity()  # type: ignore[assignment]
    x = torch.randn(1, 64, 16, 16)
    x2 = x.clone()
    x2[:, :, :8, :8] += 1.0
    with torch.no_grad():
        diff = (block(x) - block(x2)).abs()
    assert diff[:, :, :8, :8].mean() > 0.1
    assert diff[:, :, 8:, :].max() == 0 and diff[:, :, :, 8:].max() == 0
    # The bias index: the zero offset sits at the centre of the (2w-1)^2 table.
    index = block.rel_index
    assert index.shape == (64, 64)
    assert (index.diagonal() == 7 * 15 + 7).all()
    assert int(index.min()) == 0 and int(index.max()) == 15 * 15 - 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_window_attention_is_sdpa(dtype: torch.dtype) -> None:
    from gtasr_stream.model.network import window_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(6, 2, 64, 32).to(dtype) for _ in range(3))
    bias = torch.randn(2, 64, 64).to(dtype)
    got = window_attention(q, k, v, bias)
    want = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=bias.float()
    )
    assert got.shape == want.shape and got.dtype == dtype
    assert (got.float() - want).abs().max() < (1e-5 if dtype == torch.float32 else 0.05)


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_video_presets_start_at_bicubic_and_paper_does_not(preset: str) -> None:
    """The video presets' global residual with a zero last conv: a fresh net's one-step output is
    bicubic up to c_skip(1) + c_out(1) - 1 = 1.25e-3 of the image; the published net has none."""
    from gtasr_stream.model import ConsistencyModel, sample_one_step, upsample_lq

    torch.manual_seed(0)
    lq = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        fresh = sample_one_step(ConsistencyModel(build_network(preset)).eval(), lq, None)
        assert (fresh - upsample_lq(lq)).abs().max() < 2e-3
        assert PRESETS[preset].bicubic_residual and not PRESETS["paper"].bicubic_residual
        net = build_network(preset)
        net.head[-1].weight.data.normal_(0, 0.1)  # a trained head adds detail on top of bicubic
        trained = sample_one_step(ConsistencyModel(net).eval(), lq, None)
        assert (trained - upsample_lq(lq)).abs().max() > 0.05


def _periodic(pattern: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(1,3,h,w): a 4x4 pattern tiled over the frame, the same in each channel."""
    return pattern.repeat(h // 4, w // 4)[None, None].repeat(1, 3, 1, 1)


def test_grid_notch_removes_a_4_pixel_grid_and_keeps_gradients_and_detail() -> None:
    """GridNotch: a grid locked to the 4x4 blocks leaves only its mean; a linear gradient passes exactly,
    borders included; white detail loses about 0.5 % of its power away from the borders."""
    torch.manual_seed(0)
    notch = GridNotch(3)
    h, w = 96, 128
    pattern = torch.zeros(4, 4)
    pattern[1, 2] = 1.0
    grid = _periodic(pattern, h, w)
    torch.testing.assert_close(notch(grid), torch.full_like(grid, 1 / 16), atol=1e-5, rtol=0)
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    ramp = (0.02 * yy - 0.01 * xx)[None, None].repeat(2, 3, 1, 1)
    torch.testing.assert_close(notch(ramp), ramp, atol=1e-5, rtol=0)
    noise = torch.randn(1, 3, 256, 256)
    changed = (notch(noise) - noise)[..., 40:-40, 40:-40].square().mean()
    assert 0.001 < float(changed) < 0.01
    # a texture off the grid's frequencies passes: 0.3 cycles per pixel loses under 1 %
    wave = torch.sin(2 * torch.pi * 0.3 * torch.arange(256.0)).expand(1, 3, 256, 256)
    assert float((notch(wave) - wave)[..., 40:-40, 40:-40].square().mean() / wave.square().mean()) < 0.01


def test_video_presets_notch_their_detail_and_the_paper_does_not() -> None:
    """A video preset's output has no grid whatever its head makes: a head biased per 4x4 phase
    comes out as bicubic plus that bias's mean."""
    assert PRESETS["paper"].grid_notch == 0
    net = build_network("tiny").eval()
    assert net.notch is not None
    pattern = torch.zeros(4, 4)
    pattern[0, 3] = 0.1
    last = net.head[-1]
    assert isinstance(last, torch.nn.Conv2d)
    lq = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        up = torch.nn.functional.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False)
        net.head.register_forward_hook(lambda _m, _i, out: out + _periodic(pattern, 128, 128))
        got = net(up, torch.zeros(1), lq)
    torch.testing.assert_close(got, up + pattern.mean(), atol=1e-5, rtol=0)
