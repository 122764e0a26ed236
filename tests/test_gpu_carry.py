"""training.gpu_carry: what a GPU training run carries (each call under 64 MiB) and the run itself,
here on the CPU at tiny sizes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click
import pytest
import test_train
import torch

from gtasr_stream.weights import load_weights
from training import gpu_carry
from training.lpips import load_lpips

photos = test_train.photos  # three 160x176 PNGs (module fixture)
lpips_file = test_train.lpips_file
TINY = ("--device", "cpu", "--batch", "1", "--crop", "128")


def _shared(tmp_path: Path, photos: Path, lpips_file: Path) -> Path:
    shared = tmp_path / "shared"
    (shared / "weights").mkdir(parents=True)
    shutil.copyfile(lpips_file, shared / "weights" / "lpips_vgg16.safetensors")
    for split in ("train", "val"):
        shutil.copytree(photos, shared / "photos" / split)
    return shared


def test_prepare_splits_the_carry_into_calls_that_fit(tmp_path, photos, lpips_file, monkeypatch):
    """train_a: LPIPS in fp16 (read back as float32 within fp16's rounding) and the val photos;
    train_b: the train photos; each call's size counts the working tree; one over the limit is one
    error naming the folder; a missing LPIPS file is one error naming it."""
    shared = _shared(tmp_path, photos, lpips_file)
    into = gpu_carry.REPO / ".gpu" / f"test-{tmp_path.name}"  # relative names need the repository
    try:
        sizes = gpu_carry.prepare(shared, into, gpu_carry.REPO)
        a, b = into / "train_a", into / "train_b"
        assert sorted(p.name for p in (a / "val").iterdir()) == sorted(p.name for p in photos.iterdir())
        assert sorted(p.name for p in (b / "train").iterdir()) == sorted(p.name for p in photos.iterdir())
        half, full = load_lpips(a / "lpips_vgg16_fp16.safetensors"), load_lpips(lpips_file)
        assert (a / "lpips_vgg16_fp16.safetensors").stat().st_size < 0.6 * lpips_file.stat().st_size
        for (k, h), (_, f) in zip(half.state_dict().items(), full.state_dict().items(), strict=True):
            assert h.dtype == torch.float32 and torch.allclose(h, f, rtol=1e-3, atol=1e-4), k
        tree = gpu_carry.tree_bytes(gpu_carry.REPO)
        assert sizes[str(a.relative_to(gpu_carry.REPO))] == tree + gpu_carry.folder_bytes(a)
        assert sizes[str(b.relative_to(gpu_carry.REPO))] == tree + gpu_carry.folder_bytes(b)
        monkeypatch.setattr(gpu_carry, "CALL_LIMIT", tree + gpu_carry.folder_bytes(b) + 1)
        with pytest.raises(click.ClickException, match=r"train_a: .* over the"):
            gpu_carry.prepare(shared, into, gpu_carry.REPO)
        monkeypatch.undo()
        (shared / "weights" / "lpips_vgg16.safetensors").unlink()
        with pytest.raises(click.ClickException, match=r"lpips_vgg16\.safetensors: not found"):
            gpu_carry.prepare(shared, into, gpu_carry.REPO)
    finally:
        shutil.rmtree(into, ignore_errors=True)


def test_train_brings_back_the_newest_snapshots_and_the_metrics(tmp_path, photos, lpips_file, monkeypatch):
    """A run that ends by itself: an EMA snapshot per --every steps, the newest SNAPSHOTS kept, each a
    weights file gtasr-stream loads; metrics.jsonl and train.log beside them. A second call resumes."""
    monkeypatch.setattr(gpu_carry, "SNAPSHOTS", 2)
    run, out = tmp_path / "run", tmp_path / "out"
    tiny = (*TINY, "--data", str(photos), "--lpips", str(lpips_file))
    env = {**os.environ, "PYTHONPATH": str(gpu_carry.REPO)}
    assert gpu_carry.train(run, out, 300, 1, (*tiny, "--steps", "3"), env) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "ema_000002.safetensors",
        "ema_000003.safetensors",
        "metrics.jsonl",
        "train.log",
    ]
    assert "--init" in (out / "train.log").read_text().splitlines()[0]
    load_weights(out / "ema_000003.safetensors")
    assert gpu_carry.train(run, out, 300, 1, (*tiny, "--steps", "4"), env) == 0
    assert "--resume" in (out / "train.log").read_text().splitlines()[0]
    assert sorted(p.name for p in out.glob("ema_*")) == ["ema_000003.safetensors", "ema_000004.safetensors"]


def test_train_stops_at_its_time_limit(tmp_path, photos, lpips_file):
    """A run past --seconds gets Ctrl-C's SIGINT: it ends (non-zero), its log and metrics come back."""
    tiny = (*TINY, "--data", str(photos), "--lpips", str(lpips_file))
    env = {**os.environ, "PYTHONPATH": str(gpu_carry.REPO)}
    code = gpu_carry.train(tmp_path / "run", tmp_path / "out", 8, 1000, (*tiny, "--steps", "100000"), env)
    assert code != 0 and (tmp_path / "out" / "train.log").is_file()
