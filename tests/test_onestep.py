"""OneStep: the CPU's rearranged one-step sampler computes what sample_one_step computes."""

from __future__ import annotations

import pytest
import torch

from gtasr_stream.engines.torch_engine import torch_step
from gtasr_stream.model import ConsistencyModel, build_network, sample_one_step
from gtasr_stream.model.onestep import OneStep, onestep_supported


def _model(head: str, notch: int, seed: int = 0) -> ConsistencyModel:
    """A tiny network with every weight random, the zero-initialised last conv included: a head
    that matters at every phase and border."""
    torch.manual_seed(seed)
    net = build_network("tiny", head_upsample=head, grid_notch=notch)  # type: ignore[arg-type]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return ConsistencyModel(net).eval()


@pytest.mark.parametrize(
    ("head", "notch"), [("bilinear", 3), ("nearest", 0), ("bilinear", 0), ("nearest", 3)]
)
def test_onestep_is_sample_one_step_in_float32(head: str, notch: int) -> None:
    model = _model(head, notch)
    fast = OneStep(model)
    lq = torch.rand(2, 3, 37, 70) * 2 - 1  # padded to 64 x 96 inside, as sample_one_step pads
    with torch.inference_mode():
        ref = sample_one_step(model, lq, None)
        got = fast(lq)
    assert got.shape == ref.shape == (2, 3, 148, 280)
    print(f"{head}, notch {notch}: max |OneStep - sample_one_step| {(got - ref).abs().max():.2e}")
    assert (ref - got).abs().max() < 1e-5  # borders included: the strips recompute them
    assert (
        ref.abs().max() > 0.5
        and (ref - torch.nn.functional.interpolate(lq, scale_factor=4)).abs().mean() > 0.01
    )


def test_onestep_is_a_frozen_copy() -> None:
    model = _model("bilinear", 3)
    fast = OneStep(model)
    lq = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        before = fast(lq)
        for p in model.parameters():
            p.add_(1.0)  # the model changes after the copy; the copy does not
        assert torch.equal(fast(lq), before)


def test_cpu_bf16_step_runs_onestep_without_noise_and_the_generic_path_with_it() -> None:
    model = _model("bilinear", 3).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    step = torch_step(model, torch.bfloat16, onestep=True)
    lq = torch.rand(1, 3, 40, 48) * 2 - 1
    eps = torch.randn(1, 3, 160, 192) * 0.1
    with torch.inference_mode():
        exact = sample_one_step(model, lq, None)
        out = step(lq, None)
        assert out.dtype == torch.float32 and out.shape == exact.shape
        mse = ((out - exact) ** 2).mean()
        psnr = 10 * torch.log10(4 / mse)
        print(f"bf16 OneStep against float32: PSNR {psnr:.1f} dB")
        assert psnr > 50
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = OneStep(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            assert torch.equal(out, fast(lq))  # it is OneStep that ran
        noisy = step(lq, eps)  # noise: the generic sampler, which takes eps
        assert (noisy - out).abs().max() > 1e-3


def test_onestep_says_which_weights_it_runs() -> None:
    assert onestep_supported(_model("bilinear", 3))
    plain = ConsistencyModel(build_network("tiny"))
    plain.net.cfg = plain.net.cfg.__class__(**{**plain.net.cfg.__dict__, "bicubic_residual": False})
    assert not onestep_supported(plain)
    with pytest.raises(ValueError, match="bicubic residual"):
        OneStep(plain)


def test_onestep_without_onednns_fused_conv_gives_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    import gtasr_stream.model.onestep as onestep

    model = _model("bilinear", 3)
    lq = torch.rand(1, 3, 32, 64) * 2 - 1
    with torch.inference_mode():
        fused = OneStep(model)(lq)
        monkeypatch.setattr(onestep, "_FUSED_CONV", False)
        plain = OneStep(model)(lq)
    assert (fused - plain).abs().max() < 1e-5
