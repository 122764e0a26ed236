"""training.losses: values at identity, gradient paths (what is detached), Sobel maps, the weighting.

These check structure, not calibrated values, so they use a seeded random-weight LPIPS (lins made
positive, so LPIPS >= 0 as with the real weights) and need no ../shared data.
"""

from __future__ import annotations

import pytest
import torch

from gtasr_stream.model import forward_process, time_grid
from training.losses import (
    LossWeights,
    charbonnier,
    combine,
    ct_loss,
    distance,
    dtm_loss,
    grid_loss,
    phase_bias,
    rect_loss,
    sobel,
    ta_loss,
    texture_loss,
    usm_sharpen,
)
from training.lpips import LPIPS

B, H = 2, 32


@pytest.fixture(scope="module")
def lpips() -> LPIPS:
    torch.manual_seed(0)
    m = LPIPS()
    with torch.no_grad():
        for k in range(5):
            w = m.get_parameter(f"lin{k}.model.1.weight")
            w.copy_(w.abs())
    return m


def images(seed: int, n: int = B) -> torch.Tensor:
    """(n,3,H,H) smooth-ish images in [-1,1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, H // 4, H // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=(H, H), mode="bilinear", align_corners=False)


def test_charbonnier_per_sample_values() -> None:
    x = images(0)
    y = x.clone()
    y[1] += 0.5
    c = charbonnier(x, y)
    print(f"charbonnier at identity {c[0]:.3e} (= sqrt(1e-12)), at +0.5 {c[1]:.6f}")
    assert c.shape == (B,)
    assert c[0] == pytest.approx(1e-6, rel=1e-3)  # sqrt(eps), not 0
    assert c[1] == pytest.approx(0.5, rel=1e-5)


def test_sobel_flat_and_edges() -> None:
    const = torch.full((1, 2, 16, 16), 0.3)
    s = sobel(const)
    assert s.shape == const.shape
    print(f"sobel of a constant: interior max {s[..., 1:-1, 1:-1].max():.2e}, border max {s.max():.3f}")
    assert s[..., 1:-1, 1:-1].max() < 2e-6  # sqrt(1e-12) = 1e-6
    assert (s[..., 0, 5] > 0.5).all()  # zero padding makes the border an edge

    edge = torch.full((1, 2, 16, 16), -1.0)
    edge[:, 1, :, 8:] = 1.0  # vertical edge between columns 7 and 8, channel 1 only
    s = sobel(edge)
    assert torch.allclose(s[0, 1, 2:-2, 7:9], torch.full((12, 2), 8.0))  # |Gx| = (1+2+1) * 2
    assert s[0, 1, 2:-2, 2:6].max() < 2e-6 and s[0, 1, 2:-2, 10:14].max() < 2e-6
    assert s[0, 0, 1:-1, 1:-1].max() < 2e-6  # channels are separate
    horiz = edge.transpose(-1, -2)  # the same edge, horizontal: Gy must see it as Gx did
    assert torch.allclose(sobel(horiz), s.transpose(-1, -2), atol=1e-6)


def test_distance_is_half_lpips_half_charbonnier(lpips: LPIPS) -> None:
    x, y = images(0), images(1)
    d = distance(lpips, x, y)
    assert d.shape == (B,)
    assert torch.allclose(d, 0.5 * lpips(x, y) + 0.5 * charbonnier(x, y))
    assert distance(lpips, x, x).max() < 1e-6  # 0.5 * sqrt(1e-12)
    assert (d > 0.01).all()


def test_ct_loss_detaches_target(lpips: LPIPS) -> None:
    pred = images(0).requires_grad_(True)
    target = images(1).requires_grad_(True)
    loss = ct_loss(lpips, pred, target)
    assert loss.shape == (B,)
    loss.sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().max() > 0
    assert target.grad is None


def test_ta_loss_shares_eps_between_the_two_trajectories(lpips: LPIPS) -> None:
    x0, y = images(0), images(2)
    etas = time_grid(5, 2.5)
    same = ta_loss(lpips, x0, x0.clone(), y, etas, torch.Generator().manual_seed(0))
    print(f"ta_loss(x0_hat = x0) = {same.tolist()} (charbonnier's 0.5 * 3 * 0.5 * 1e-6 floor)")
    assert same.shape == (B,)
    assert same.max() < 1e-6  # with separate eps the LPIPS half would be far from 0

    x0_hat = images(1).requires_grad_(True)
    x0_leaf = x0.clone().requires_grad_(True)
    y_leaf = y.clone().requires_grad_(True)
    loss = ta_loss(lpips, x0_leaf, x0_hat, y_leaf, etas, torch.Generator().manual_seed(0))
    assert (loss > 0.01).all()
    loss.sum().backward()
    assert x0_hat.grad is not None and torch.isfinite(x0_hat.grad).all() and x0_hat.grad.abs().max() > 0
    assert x0_leaf.grad is None and y_leaf.grad is None

    # the same sum written out: one fresh eps per interior point i = 1..N-2, 0.5 * sum_i d(q(x0), q(x0_hat))
    eps = torch.randn((3, *x0.shape), generator=torch.Generator().manual_seed(0))
    want = 0.5 * sum(
        distance(
            lpips,
            forward_process(x0, y, eps[i - 1], float(etas[i])),
            forward_process(x0_hat, y, eps[i - 1], float(etas[i])),
        )
        for i in range(1, 4)
    )
    assert isinstance(want, torch.Tensor)
    assert torch.allclose(loss, want, atol=1e-6)
    other = ta_loss(lpips, x0, x0_hat, y, etas, torch.Generator().manual_seed(1))
    assert not torch.allclose(other, loss)  # eps is drawn, not fixed
    assert torch.equal(ta_loss(lpips, x0, x0_hat, y, time_grid(2, 1.0), None), torch.zeros(B))  # no interior


def test_rect_loss_published_has_no_gradient(lpips: LPIPS) -> None:
    x0 = images(0)
    x0_hat = images(1).requires_grad_(True)
    ours = rect_loss(lpips, x0_hat, x0)
    published = rect_loss(lpips, x0_hat, x0, published=True)
    assert ours.shape == published.shape == (B,)
    assert torch.allclose(ours, published)
    assert torch.allclose(ours, lpips(sobel(x0_hat), sobel(x0)))
    assert not published.requires_grad
    ours.sum().backward()
    assert x0_hat.grad is not None and torch.isfinite(x0_hat.grad).all() and x0_hat.grad.abs().max() > 0


def test_dtm_loss_gradient_only_through_x0_hat(lpips: LPIPS) -> None:
    x0 = images(0).requires_grad_(True)
    x0_hat = images(1).requires_grad_(True)
    f_z = images(3).requires_grad_(True)
    f_x = images(4).requires_grad_(True)
    loss = dtm_loss(lpips, x0_hat, x0, f_z, f_x)
    assert loss.shape == (B,)
    loss.sum().backward()
    assert x0.grad is None and f_z.grad is None and f_x.grad is None
    assert x0_hat.grad is not None and torch.isfinite(x0_hat.grad).all()

    # the same with everything but LPIPS's first argument as constants
    with torch.no_grad():
        target = x0_hat - (f_z - f_x) - 0.2 * (sobel(f_z) - sobel(f_x))
        w = 1 / (x0_hat - x0).abs().mean(dim=(1, 2, 3))
    leaf = x0_hat.detach().clone().requires_grad_(True)
    want = 0.8 * w * lpips(leaf, target)
    want.sum().backward()
    assert leaf.grad is not None
    print(f"dtm_loss {loss.tolist()}, max grad diff {(x0_hat.grad - leaf.grad).abs().max():.2e}")
    assert torch.allclose(loss, want, rtol=1e-5)
    assert torch.allclose(x0_hat.grad, leaf.grad, rtol=1e-4, atol=1e-9)


def test_dtm_weight_is_clamped(lpips: LPIPS) -> None:
    lp = lpips
    x0 = images(0)
    x0_hat = x0 + 1e-5
    loss = dtm_loss(lp, x0_hat, x0, images(3), images(4))
    ref = 0.8 * lp(x0_hat, x0_hat - (images(3) - images(4)) - 0.2 * (sobel(images(3)) - sobel(images(4))))
    assert torch.allclose(loss, 1000 * ref, rtol=1e-5)  # w = 1 / max(1e-5, 1e-3)


def test_combine_weights_and_logs() -> None:
    ct = torch.tensor([1.0, 3.0], requires_grad=True)
    ta = torch.tensor([0.5, 0.25], requires_grad=True)
    total, logged = combine({"ct": ct, "ta": ta}, LossWeights(ct=2.0, ta=3.0))
    assert total.item() == pytest.approx((2 * 1 + 3 * 0.5 + 2 * 3 + 3 * 0.25) / 2)
    assert logged == {"ct": pytest.approx(2.0), "ta": pytest.approx(0.375)}
    total.backward()
    assert ct.grad is not None and torch.allclose(ct.grad, torch.tensor([1.0, 1.0]))  # 2 / B
    assert LossWeights() == LossWeights(ct=1.0, ta=1.0, dtm=1.0, rect=1.0)  # METHOD.md
    with pytest.raises(ValueError, match="allowed names"):
        combine({"lpips": ct}, LossWeights())
    with pytest.raises(ValueError, match=r"\(B,\)"):
        combine({"ct": ct, "ta": torch.zeros(3)}, LossWeights())


def test_grid_loss_sees_a_faint_grid_that_charbonnier_does_not() -> None:
    """A per-phase bias of one code value on every 4x4 block (the head's artefact) lifts the score well
    above the ~1 of an error without a grid, while the mean absolute error hardly moves; the gradient
    reaches x0_hat only."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 132, 132, generator=g), 5, 1) * 2 - 1  # smooth
    detail = 0.05 * torch.randn(2, 3, 128, 128, generator=g)  # lost detail: no grid in it
    bias = (torch.rand(4, 4, generator=g) - 0.5) * (4 / 255)  # up to +-1 code value per phase
    grid = bias.repeat(32, 32).expand(2, 3, 128, 128)
    plain, gridded = (x0 + detail).requires_grad_(), x0 + detail + grid
    clean = grid_loss(plain, x0)
    assert clean.shape == (2,) and bool((clean < 2).all()), clean
    assert bool((grid_loss(gridded, x0) > 3 * clean).all())
    assert float((gridded - x0).abs().mean()) < 1.05 * float((plain.detach() - x0).abs().mean())
    clean.sum().backward()
    assert plain.grad is not None and bool(plain.grad.abs().sum() > 0)
    with pytest.raises(ValueError, match="multiples of 4"):
        grid_loss(x0[..., :126], x0[..., :126])


def test_phase_bias_counts_a_grid_in_code_values() -> None:
    """One phase of every 4x4 block one code value off: about 1 (15/16, less the mean over phases),
    whatever the rest of the error does on average; an error the same on every phase scores 0."""
    x0 = torch.rand(2, 3, 64, 64) * 2 - 1
    one = torch.zeros(4, 4)
    one[1, 2] = 2 / 255  # one code value on the [-1, 1] scale
    got = phase_bias(x0 + one.repeat(16, 16), x0)
    torch.testing.assert_close(got, torch.full((2,), 15 / 16), atol=1e-4, rtol=0)
    assert float(phase_bias(x0 + 0.1, x0).max()) < 1e-8
    with pytest.raises(ValueError, match="multiples of 4"):
        phase_bias(x0[..., :62], x0[..., :62])


def test_phase_bias_is_local_to_tiles() -> None:
    """A grid of one sign on the left half and the opposite sign on the right cancels over the crop
    but not in 32-pixel tiles, where real clips show it."""
    x0 = torch.rand(1, 3, 64, 64) * 2 - 1
    one = torch.zeros(4, 4)
    one[1, 2] = 2 / 255
    grid = one.repeat(16, 16)
    grid[:, 32:] *= -1
    torch.testing.assert_close(phase_bias(x0 + grid, x0), torch.full((1,), 15 / 16), atol=1e-4, rtol=0)
    assert float(phase_bias(x0 + grid, x0, tile=64)) < 1e-8


def test_texture_loss_keeps_a_shifted_texture_and_rejects_a_smoothed_one(lpips: LPIPS) -> None:
    """The Gram loss asks for the HR's kind of texture per square, not its phase: the same periodic
    texture shifted by half its period scores far lower than the texture smoothed away, though pixel
    by pixel the shifted one is further off. 0 for equal images; gradient to x0_hat only."""
    g = torch.Generator().manual_seed(0)
    tile = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    x0 = tile.repeat(1, 1, 8, 8)  # 64x64, period 8
    shifted = torch.roll(x0, shifts=(4, 4), dims=(2, 3))
    smooth = torch.nn.functional.avg_pool2d(x0, 5, 1, 2, count_include_pad=False)
    taps = lambda x: lpips.vgg_taps(x, 3)  # noqa: E731
    assert float(texture_loss(taps, x0, x0).abs().max()) < 1e-6
    near, far = texture_loss(taps, shifted, x0), texture_loss(taps, smooth, x0)
    assert near.shape == (1,) and float(near) < 0.2 * float(far), (near, far)
    assert float(charbonnier(shifted, x0)) > float(charbonnier(smooth, x0))
    x_hat = smooth.clone().requires_grad_()
    target = x0.clone().requires_grad_()
    texture_loss(taps, x_hat, target).sum().backward()
    assert x_hat.grad is not None and bool(x_hat.grad.abs().sum() > 0) and target.grad is None
    with pytest.raises(ValueError, match="32-pixel squares"):
        texture_loss(taps, x0[..., :48], x0[..., :48])


def test_usm_sharpen_steepens_edges_and_leaves_flat_areas() -> None:
    """The sharpened ground truth (the runtime's unsharp mask, in the model space): an edge gets
    steeper with an overshoot on each side, clipped to [-1, 1]; a flat image and weight 0 come back
    as they were."""
    edge = torch.where(torch.arange(64) < 32, -0.6, 0.6).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    soft = torch.nn.functional.avg_pool2d(edge, 3, 1, 1, count_include_pad=False)
    flat = torch.full((1, 3, 64, 64), 0.3)
    assert torch.allclose(usm_sharpen(flat, 0.5), flat, atol=1e-6)
    assert torch.allclose(usm_sharpen(soft, 0.0), soft, atol=1e-6)
    sharp = usm_sharpen(soft, 1.0)
    steeper = float(sobel(sharp)[..., 8:-8, 8:-8].max()) / float(sobel(soft)[..., 8:-8, 8:-8].max())
    assert steeper > 1.15
    row = sharp[0, 0, 32]
    assert float(row[26:32].min()) < -0.65 and float(row[32:38].max()) > 0.65  # the overshoot
    assert float(usm_sharpen(edge * 1.6, 2.0).abs().max()) <= 1.0
