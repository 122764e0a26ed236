"""Peer SR networks (training/peers.py) against the oracle definitions in ../shared/data/weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file, save_file

from training.peers import PEER_FILES, PeerName, SRVGGNetCompact, load_peer

ORACLE_CLASS = {"realesrgan_x4plus": "RRDBNet", "realesr_animevideov3": "SRVGGNetCompact", "span_x4": "SPAN"}


def oracle(weights: Path) -> ModuleType:
    """../shared/data/weights/reference_models.py, imported by path (it is not a package)."""
    spec = importlib.util.spec_from_file_location("reference_models", weights / "reference_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(PEER_FILES))
def test_peer_matches_oracle(name: PeerName, shared_data: Path) -> None:
    weights = shared_data / "weights"
    ref = getattr(oracle(weights), ORACLE_CLASS[name])()
    ref.load_state_dict(load_file(str(weights / PEER_FILES[name])), strict=True)
    ref.eval()
    ours = load_peer(name, weights)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (1,3,32,32) in [0,1]
    with torch.no_grad():
        raw = ref(x)  # the oracle leaves clamping to the caller
        got = ours(x)
    want = raw.clamp(0, 1)
    inside = ((raw > 0) & (raw < 1)).float().mean().item()
    diff = (got - want).abs()
    print(f"{name}: max |ours - oracle| = {diff.max():.3g}, mean {diff.mean():.3g}, unclamped {inside:.0%}")
    assert got.shape == (1, 3, 128, 128)
    assert inside > 0.3, "too few outputs inside (0,1) for the comparison to mean anything"
    assert diff.max() <= 1e-5


@pytest.mark.parametrize("name", list(PEER_FILES))
def test_load_peer_output_size_and_range(name: PeerName, shared_data: Path) -> None:
    net = load_peer(name, shared_data / "weights")
    assert not net.training
    assert all(p.dtype == torch.float32 for p in net.parameters())
    x = torch.rand(2, 3, 12, 20, generator=torch.Generator().manual_seed(1))  # (B,3,h,w), h != w
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, 48, 80)
    assert y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_load_peer_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"span_x4\.safetensors"):
        load_peer("span_x4", tmp_path)


def test_load_peer_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="realesrgan_x4plus"):
        load_peer("bicubic", tmp_path)  # type: ignore[arg-type]


def test_load_peer_is_strict(tmp_path: Path) -> None:
    """A file missing one tensor must not load silently with that layer left at its random init."""
    state = SRVGGNetCompact().state_dict()
    del state["body.34.bias"]
    save_file(state, str(tmp_path / PEER_FILES["realesr_animevideov3"]))
    with pytest.raises(RuntimeError, match=r"body\.34\.bias"):
        load_peer("realesr_animevideov3", tmp_path)
