"""Weights files: round trip, metadata, atomic writes, and one-line errors naming the file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gtasr_stream import weights
from gtasr_stream.model import PRESETS, GTASRNet, build_network
from gtasr_stream.weights import (
    FORMAT_VERSION,
    WeightsError,
    default_weights,
    load_weights,
    save_weights,
)


def tiny_net(seed: int = 0) -> GTASRNet:
    """A tiny net with every weight non-zero, so a tensor that fails to load changes the output."""
    torch.manual_seed(seed)
    net = build_network("tiny")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def run(net: GTASRNet) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    lq = torch.randn(1, 3, 32, 32, generator=g)
    x = torch.randn(1, 3, 128, 128, generator=g)
    with torch.no_grad():
        return net(x, torch.tensor([0.1]), lq)


def test_round_trip_gives_identical_outputs_and_metadata(tmp_path: Path) -> None:
    net = tiny_net()
    path = tmp_path / "w.safetensors"
    save_weights(path, net, "tiny", provenance="unit test", extra={"step": "10"})
    loaded, meta = load_weights(path, preset="tiny")
    assert not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.equal(run(net), run(loaded))
    assert meta["format"] == "gtasr-stream"
    assert meta["format_version"] == str(FORMAT_VERSION)
    assert meta["preset"] == "tiny"
    assert json.loads(meta["config"]) == json.loads(json.dumps(dataclasses.asdict(PRESETS["tiny"])))
    assert meta["provenance"] == "unit test"
    assert meta["step"] == "10"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left


def test_half_precision_file_loads_as_float32(tmp_path: Path) -> None:
    net = tiny_net()
    path = tmp_path / "half.safetensors"
    save_weights(path, net.half(), "tiny", provenance="fp16")
    full = tmp_path / "full.safetensors"
    save_weights(full, tiny_net(), "tiny", provenance="fp32")
    assert path.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_weights(path)
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert b.dtype == torch.float32, k
        assert torch.equal(a.float(), b), k


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(weights, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_weights(tmp_path / "w.safetensors", tiny_net(), "tiny", provenance="x")
    assert list(tmp_path.iterdir()) == []


def _write_raw(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


META = {"format": "gtasr-stream", "format_version": "1", "preset": "tiny"}


def test_wrong_shape_names_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    wide = GTASRNet(dataclasses.replace(PRESETS["tiny"], base_channels=32))
    with pytest.raises(ValueError, match="the network's config is not preset 'tiny'"):
        save_weights(tmp_path / "refused.safetensors", wide, "tiny", provenance="mislabelled")
    path = tmp_path / "weights.safetensors"
    _write_raw(path, wide.state_dict(), META)
    with pytest.raises(WeightsError) as err:
        load_weights(path)
    assert str(err.value) == (
        f"{path}: tensor 'conv_in.weight' has shape (32, 51, 3, 3), preset 'tiny' expects (16, 51, 3, 3)"
    )


def test_missing_and_unexpected_tensors(tmp_path: Path) -> None:
    state = tiny_net().state_dict()
    missing = tmp_path / "missing.safetensors"
    _write_raw(missing, {k: v for k, v in state.items() if k != "map1.bias"}, META)
    with pytest.raises(WeightsError, match=r"missing\.safetensors: tensor 'map1\.bias' is missing"):
        load_weights(missing)
    extra = tmp_path / "extra.safetensors"
    _write_raw(extra, {**state, "bonus.weight": torch.zeros(2)}, META)
    with pytest.raises(WeightsError, match=r"extra\.safetensors: unexpected tensor 'bonus\.weight'"):
        load_weights(extra)


def test_preset_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(path, tiny_net(), "tiny", provenance="x")
    with pytest.raises(WeightsError) as err:
        load_weights(path, preset="small")
    assert str(err.value) == f"{path}: holds preset 'tiny', but preset 'small' was asked"


def test_missing_or_unknown_preset_metadata(tmp_path: Path) -> None:
    state = tiny_net().state_dict()
    none = tmp_path / "none.safetensors"
    _write_raw(none, state, {"format": "gtasr-stream"})
    with pytest.raises(WeightsError, match=r"none\.safetensors: no 'preset' in the file's metadata"):
        load_weights(none)
    huge = tmp_path / "huge.safetensors"
    _write_raw(huge, state, {"preset": "huge", "format_version": "1"})
    with pytest.raises(WeightsError, match=r"huge\.safetensors: unknown preset 'huge'"):
        load_weights(huge)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    _write_raw(path, tiny_net().state_dict(), {"preset": "tiny", "format_version": "99"})
    with pytest.raises(WeightsError, match=r"future\.safetensors: format version '99'"):
        load_weights(path)


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.safetensors"
    path.write_bytes(b"this is a text file, not tensors\n" * 4)
    with pytest.raises(WeightsError) as err:
        load_weights(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: not a readable safetensors file")
    assert "\n" not in msg


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    with pytest.raises(WeightsError) as err:
        load_weights(path)
    assert str(err.value) == f"{path}: no such weights file"


def test_default_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights.DEFAULT_WEIGHTS.parent == Path(weights.__file__).parent / "checkpoints"
    absent = tmp_path / "default.safetensors"
    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", absent)
    with pytest.raises(WeightsError) as err:
        default_weights()
    assert str(err.value) == (f"no default weights are installed (expected {absent}); pass --weights PATH")
    save_weights(absent, tiny_net(), "tiny", provenance="x")
    assert default_weights() == absent


def test_weights_error_is_a_user_error() -> None:
    from gtasr_stream.errors import UserError

    assert issubclass(WeightsError, UserError)


def test_shipped_default_weights_are_trained_and_described() -> None:
    """The checkpoint in the package: loads, says where it came from, and is not a fresh net
    (a fresh video preset outputs exactly bicubic; its head's last conv starts at zero)."""
    from gtasr_stream.engines.upscaler import NOISES

    net, meta = load_weights(weights.DEFAULT_WEIGHTS)
    assert meta["preset"] == "tiny" and "gtasr-train" in meta["provenance"]
    assert meta["noise"] in NOISES
    assert net.head[-1].weight.abs().max() > 1e-3


def test_shipped_models_and_unknown_names() -> None:
    """--model NAME: every shipped name resolves to a loadable file; an unknown name is one line."""
    for name in weights.MODELS:
        _net, meta = load_weights(weights.model_weights(name))
        assert meta["preset"] == "tiny"
    assert weights.model_weights(weights.DEFAULT_MODEL) == weights.DEFAULT_WEIGHTS
    # the default was trained with the bilinear head and the grid notch; restore predates them. The
    # default runs a wider notch than it was trained with (README "Shipped models"): its file says so
    video = load_weights(weights.model_weights("video"))[0]
    assert dataclasses.replace(video.cfg, grid_notch=PRESETS["tiny"].grid_notch) == PRESETS["tiny"]
    assert video.notch is not None and video.notch.k == video.cfg.grid_notch == 5
    restore = load_weights(weights.model_weights("restore"))[0].cfg
    assert (restore.head_upsample, restore.grid_notch) == ("nearest", 0)
    with pytest.raises(WeightsError, match="unknown model 'anime'; shipped models: video, restore"):
        weights.model_weights("anime")


def test_denoise_blend_ends_reproduce_each_model(tmp_path: Path) -> None:
    """--denoise S: S = 0 and S = 1 are exactly the two files; S = 0.5 is their mean, tensor by tensor."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_weights(a, tiny_net(1), "tiny", provenance="a", extra={"noise": "none", "sharpen": "0.1"})
    save_weights(b, tiny_net(2), "tiny", provenance="b")
    net_a, net_b = load_weights(a)[0].state_dict(), load_weights(b)[0].state_dict()
    for s, want in ((0.0, net_a), (1.0, net_b)):
        got = weights.blend_weights(a, b, s)[0].state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
    half, meta = weights.blend_weights(a, b, 0.5)
    differ = [k for k in net_a if not torch.equal(net_a[k], net_b[k])]
    assert differ and all(torch.allclose(half.state_dict()[k], (net_a[k] + net_b[k]) / 2) for k in net_a)
    assert meta["noise"] == "none" and meta["provenance"] == "0.5 x a.safetensors + 0.5 x b.safetensors"
    assert meta["sharpen"] == "0.05"  # the output sharpening blends with the weights (b has none: 0)
    with pytest.raises(WeightsError, match=r"--denoise must be in \[0, 1\]"):
        weights.blend_weights(a, b, 1.5)


@pytest.mark.parametrize("bad", ["nan", "inf", "int"])
def test_non_finite_or_integer_tensor_is_refused_naming_it(tmp_path: Path, bad: str) -> None:
    state = {k: v.clone() for k, v in tiny_net().state_dict().items()}
    name = "conv_in.weight"
    if bad == "int":
        state[name] = state[name].round().to(torch.int32)
    else:
        state[name][0, 0, 0, 0] = float(bad)
    path = tmp_path / "weights.safetensors"
    _write_raw(path, state, META)
    with pytest.raises(WeightsError) as err:
        load_weights(path)
    want = "is int32, not floating point" if bad == "int" else "holds NaN or infinite values"
    assert str(err.value).startswith(f"{path}: tensor '{name}' {want}")


def test_head_upsampling_is_read_from_the_file(tmp_path: Path) -> None:
    """The tiny preset's head is bilinear; a file records its own, and a file from before the field
    (no head_upsample in its config) has the nearest head it was trained with."""
    assert PRESETS["tiny"].head_upsample == "bilinear"
    new, old = tmp_path / "new.safetensors", tmp_path / "old.safetensors"
    net = tiny_net()
    save_weights(new, net, "tiny", provenance="x")
    config = dataclasses.asdict(PRESETS["tiny"])
    del config["head_upsample"]
    _write_raw(old, net.state_dict(), {"preset": "tiny", "format_version": "1", "config": json.dumps(config)})
    loaded_new, loaded_old = load_weights(new)[0], load_weights(old)[0]
    assert loaded_new.cfg.head_upsample == "bilinear" and loaded_old.cfg.head_upsample == "nearest"
    assert torch.equal(run(loaded_new), run(net))
    assert not torch.allclose(run(loaded_old), run(net))  # the head's upsampling changes the output
    nearest = tmp_path / "nearest.safetensors"
    save_weights(nearest, loaded_old, "tiny", provenance="x")  # and a nearest net saves as one
    assert load_weights(nearest)[0].cfg.head_upsample == "nearest"
    bad = tmp_path / "bad.safetensors"
    config["head_upsample"] = "bicubic"
    _write_raw(bad, net.state_dict(), {"preset": "tiny", "format_version": "1", "config": json.dumps(config)})
    with pytest.raises(WeightsError, match=r"bad\.safetensors: unknown head_upsample 'bicubic'"):
        load_weights(bad)


def test_denoise_blend_of_heads_that_differ_runs_the_larger_share(tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_weights(a, tiny_net(1), "tiny", provenance="a")
    save_weights(b, build_network("tiny", head_upsample="nearest"), "tiny", provenance="b")
    assert weights.blend_weights(a, b, 0.3)[0].cfg.head_upsample == "bilinear"
    assert weights.blend_weights(a, b, 0.7)[0].cfg.head_upsample == "nearest"
