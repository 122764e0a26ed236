"""The consistency math against METHOD.md's numbers, and one-step sampling's padding and range."""

from __future__ import annotations

import math

import pytest
import torch

from gtasr_stream.model import (
    ConsistencyModel,
    build_network,
    c_noise,
    c_out,
    c_skip,
    forward_process,
    sample_one_step,
    time_grid,
    upsample_lq,
)
from gtasr_stream.model.consistency import bicubic_x4


@pytest.fixture(scope="module")
def model() -> ConsistencyModel:
    """A tiny model whose output reaches well outside [-1, 1], so the clamp has work to do."""
    torch.manual_seed(0)
    net = build_network("tiny")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        last = net.head[-1]
        assert isinstance(last, torch.nn.Conv2d)
        last.weight.mul_(50.0)
    return ConsistencyModel(net).eval()


@pytest.mark.parametrize(
    ("n", "p", "expected"),
    [
        (5, 2.5, [0.0, 0.0313, 0.1768, 0.4871, 1.0]),
        (4, 2.5, [0.0, 0.0642, 0.3629, 1.0]),
        (4, 1.0, [0.0, 1 / 3, 2 / 3, 1.0]),
    ],
)
def test_time_grid_matches_method(n: int, p: float, expected: list[float]) -> None:
    grid = time_grid(n, p)
    assert grid.shape == (n,)
    torch.testing.assert_close(
        grid, torch.tensor(expected, dtype=grid.dtype), atol=1e-4, rtol=0
    )  # METHOD rounds to 4 places


def test_time_grid_needs_two_points() -> None:
    with pytest.raises(ValueError, match="n >= 2"):
        time_grid(1, 2.5)


def test_preconditioning_at_the_ends() -> None:
    eta = torch.tensor([0.0, 1.0])
    torch.testing.assert_close(c_skip(eta), torch.tensor([1.0, 0.25 / 100.25]))
    torch.testing.assert_close(c_out(eta), torch.tensor([0.0, 10.0 / math.sqrt(100.25)]))
    # METHOD.md's numbers at eta = 1 (read from the published code)
    assert abs(float(c_skip(eta)[1]) - 0.0025) < 1e-4
    assert abs(float(c_out(eta)[1]) - 0.999) < 1e-3
    torch.testing.assert_close(c_noise(eta), torch.log(torch.tensor([0.002, 1.002])) / 4)


def test_forward_process_endpoints_and_midpoint() -> None:
    g = torch.Generator().manual_seed(0)
    x0, y, eps = (torch.randn(2, 3, 8, 8, generator=g) for _ in range(3))
    torch.testing.assert_close(forward_process(x0, y, eps, torch.zeros(2)), x0)
    torch.testing.assert_close(forward_process(x0, y, eps, 1.0), y + eps)
    mixed = forward_process(x0, y, eps, torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(mixed[0], x0[0])
    torch.testing.assert_close(mixed[1], 0.5 * x0[1] + 0.5 * (y[1] + eps[1]))


def test_upsample_lq_is_bicubic_x4_and_clamped() -> None:
    lq = torch.full((1, 3, 5, 7), 0.25)
    torch.testing.assert_close(upsample_lq(lq), torch.full((1, 3, 20, 28), 0.25))
    edge = torch.tensor([-1.0, -1.0, 1.0, 1.0]).repeat(1, 3, 4, 1)  # bicubic overshoots a step
    y = upsample_lq(edge)
    raw = torch.nn.functional.interpolate(edge, scale_factor=4.0, mode="bicubic")
    assert raw.max() > 1.0 and raw.min() < -1.0
    assert y.max() == 1.0 and y.min() == -1.0


@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (2, 3), (7, 4), (33, 48)])
def test_bicubic_x4_is_pytorchs_bicubic(hw: tuple[int, int]) -> None:
    """The CPU path's bicubic (sums of shifted views) gives F.interpolate's numbers, borders included
    (overshooting steps, 1-pixel sides)."""
    g = torch.Generator().manual_seed(hw[0] * 100 + hw[1])
    lq = (torch.rand(2, 3, *hw, generator=g) > 0.5).float() * 2 - 1 + torch.rand(2, 3, *hw, generator=g) * 0.1
    ref = torch.nn.functional.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False)
    torch.testing.assert_close(bicubic_x4(lq), ref, rtol=0, atol=2e-6)


def test_sample_one_step_takes_another_bicubic(model: ConsistencyModel) -> None:
    """What computes the bicubic is the caller's; bicubic_x4 gives the output F.interpolate gives."""
    g = torch.Generator().manual_seed(6)
    lq = torch.rand(1, 3, 30, 40, generator=g) * 2 - 1
    with torch.no_grad():
        ref = sample_one_step(model, lq, None)
        torch.testing.assert_close(sample_one_step(model, lq, None, bicubic_x4), ref, rtol=0, atol=1e-4)
        zero = sample_one_step(
            model, lq, None, lambda x: torch.zeros(*x.shape[:2], 4 * x.shape[2], 4 * x.shape[3])
        )
    assert (zero - ref).abs().max() > 0.1  # the given function is what ran


def test_boundary_condition_f_at_eta_0_is_identity(model: ConsistencyModel) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 128, 128, generator=g)
    lq = torch.randn(1, 3, 32, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.zeros(1), lq), x)
        assert not torch.allclose(model(x, torch.ones(1), lq), x, atol=0.1)


@pytest.mark.parametrize("hw", [(37, 23), (5, 7)])  # reflect padding, and replicate (pad >= size)
def test_sample_one_step_any_size(model: ConsistencyModel, hw: tuple[int, int]) -> None:
    h, w = hw
    g = torch.Generator().manual_seed(2)
    lq = torch.rand(1, 3, h, w, generator=g) * 2 - 1
    eps = torch.randn(1, 3, 4 * h, 4 * w, generator=g)
    with torch.no_grad():
        out = sample_one_step(model, lq, eps)
    assert out.shape == (1, 3, 4 * h, 4 * w)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert (out.abs() == 1.0).any() and (out.abs() < 1.0).any()  # the clamp acted, not everywhere


def test_sample_one_step_on_a_multiple_is_one_model_call(model: ConsistencyModel) -> None:
    g = torch.Generator().manual_seed(3)
    lq = torch.rand(2, 3, 32, 64, generator=g) * 2 - 1
    eps = torch.randn(1, 3, 128, 256, generator=g)  # one eps shared by the batch
    with torch.no_grad():
        out = sample_one_step(model, lq, eps)
        direct = model(upsample_lq(lq) + eps, torch.ones(2), lq).clamp(-1, 1)
    torch.testing.assert_close(out, direct)


def test_sample_one_step_computes_the_bicubic_once_with_the_same_result(
    model: ConsistencyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """x_T's bicubic and the network's bicubic residual are the same HR pass (NOTES.md candidate 6):
    computed once, and bit for bit what the network computing its own gives."""
    g = torch.Generator().manual_seed(5)
    lq = torch.rand(2, 3, 32, 64, generator=g) * 2 - 1
    eps = torch.randn(1, 3, 128, 256, generator=g)
    with torch.no_grad():
        two_passes = model(upsample_lq(lq) + eps, torch.ones(2), lq).clamp(-1, 1)  # the net's own bicubic
        modes: list[str] = []
        interpolate = torch.nn.functional.interpolate

        def counting(*args: object, **kw: object) -> torch.Tensor:
            modes.append(str(kw.get("mode")))
            return interpolate(*args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(torch.nn.functional, "interpolate", counting)
        out = sample_one_step(model, lq, eps)
    assert modes.count("bicubic") == 1, modes  # was 2: upsample for x_T, again in GTASRNet.forward
    assert torch.equal(out, two_passes)


def test_sample_one_step_noise(model: ConsistencyModel) -> None:
    g = torch.Generator().manual_seed(4)
    lq = torch.rand(1, 3, 20, 30, generator=g) * 2 - 1
    with torch.no_grad():
        a = sample_one_step(model, lq, None)
        b = sample_one_step(model, lq, None)
        c = sample_one_step(model, lq, torch.randn(1, 3, 80, 120, generator=g))
    assert torch.equal(a, b)  # no noise: deterministic
    assert (a - c).abs().mean() > 1e-3  # noise reaches the output


def test_sample_one_step_casts_to_the_model_dtype(model: ConsistencyModel) -> None:
    half = ConsistencyModel(build_network("tiny")).to(torch.bfloat16).eval()
    half.load_state_dict(model.state_dict())
    lq = torch.rand(1, 3, 32, 32) * 2 - 1
    eps = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        out = sample_one_step(half, lq, eps)
        ref = sample_one_step(model, lq, eps)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().mean() < 0.05


def test_sample_one_step_rejects_wrong_eps_shape(model: ConsistencyModel) -> None:
    with pytest.raises(ValueError, match=r"eps must be \(B or 1,3,40,40\)"):
        sample_one_step(model, torch.zeros(1, 3, 10, 10), torch.zeros(1, 3, 10, 10))
