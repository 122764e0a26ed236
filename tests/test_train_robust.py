"""gtasr-train against what goes wrong in long runs: photos that cannot be read, a torn metrics line,
a damaged newest checkpoint, --resume with nothing to resume, flags the network or machine cannot take.
Tiny preset, crop 128, a few steps on the CPU."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_train
import torch
from PIL import Image
from safetensors.torch import load_file

import training.checkpoint as checkpoint
from gtasr_stream.errors import UserError
from gtasr_stream.model import ConsistencyModel, build_network
from training.checkpoint import resume_checkpoint, save_checkpoint
from training.data import PhotoCrops
from training.samples import val_crops
from training.train import train

REPO = Path(__file__).resolve().parents[1]
photos = test_train.photos  # three 160x176 PNGs (module fixture)
lpips_file = test_train.lpips_file
options = test_train.options


class CheapDistance(torch.nn.Module):
    """Stands in for LPIPS-VGG in the loop: what these tests check does not depend on the distance,
    and VGG16 made each step take seconds on a busy 2-core CPU."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().mean(dim=(1, 2, 3))


@pytest.fixture
def cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("training.train.load_lpips", lambda path: CheapDistance())


def with_bad_files(photos: Path, folder: Path) -> Path:
    """The good photos plus a truncated PNG, a JPEG that is not one, and a photo under the crop."""
    folder.mkdir()
    for p in photos.iterdir():
        shutil.copy(p, folder / p.name)
    data = (photos / "0.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])  # a copy interrupted half-way
    (folder / "junk.jpg").write_bytes(b"not an image at all")
    Image.new("RGB", (100, 200)).save(folder / "small.png")
    return folder


def test_unusable_photos_are_skipped_at_start_with_one_warning(photos, tmp_path):
    """Each photo is decoded once when the run starts: the three bad ones are named in one warning
    and never drawn (before, the first batch that drew one ended the run with a traceback)."""
    said: list[str] = []
    crops = PhotoCrops(with_bad_files(photos, tmp_path / "data"), 128, said.append)
    assert [p.name for p in crops.paths] == ["0.png", "1.png", "2.png"]
    assert len(said) == 1 and said[0].startswith("--data: skipping 3 of the images")
    for name in ("cut.png (", "junk.jpg (", "small.png (100x200, under the 128-px crop)"):
        assert name in said[0], said[0]
    g = torch.Generator().manual_seed(0)
    assert all(crops.batch(4, g).shape == (4, 3, 128, 128) for _ in range(10))
    # the sample grids' photos likewise
    _, hr = val_crops(tmp_path / "data", 128, torch.device("cpu"), said.append)
    assert hr.shape == (3, 3, 128, 128) and said[-1].startswith("--val: skipping 3")


def test_no_usable_photo_is_one_error_naming_them(photos, tmp_path):
    folder = with_bad_files(photos, tmp_path / "data")
    for p in photos.iterdir():
        (folder / p.name).unlink()
    with pytest.raises(ValueError, match=r"--data: 3 image files in .* none usable: cut\.png") as info:
        PhotoCrops(folder, 128)
    assert "\n" not in str(info.value)


def test_a_torn_metrics_line_is_dropped_with_a_warning(photos, lpips_file, tmp_path, cheap):
    """A run killed while writing metrics.jsonl leaves half a line; --resume drops it (it failed on
    it with a JSONDecodeError) and says so, and each step is logged once."""
    cfg = options(photos, lpips_file, tmp_path, steps=1)
    train(cfg, "stage1")
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "stage": "stag')  # killed mid-line
    said: list[str] = []
    train(dataclasses.replace(cfg, steps=2, resume=True), "stage1", on_warning=said.append)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert said == [f"{tmp_path / 'metrics.jsonl'}: dropped line 2 of 2, not a whole record"]


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(photos, lpips_file, tmp_path, cheap):
    """Steps 1 and 2 checkpointed, then step 2's weights cut short (a crash of the machine): --resume
    says so, resumes from step 1, and ends with exactly the weights of the run that was not damaged."""
    cfg = options(photos, lpips_file, tmp_path, steps=2, checkpoint_every=1)
    reference = load_file(str(train(cfg, "stage1")))
    ckpts = tmp_path / "checkpoints"
    weights = ckpts / "step_00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    said: list[str] = []
    resumed = load_file(str(train(dataclasses.replace(cfg, resume=True), "stage1", on_warning=said.append)))
    assert len(said) == 1 and said[0].startswith("--resume: cannot read step_00000002 (")
    assert said[0].endswith(f"; resuming from {ckpts / 'step_00000001'}")
    assert max((reference[k] - resumed[k]).abs().max().item() for k in reference) == 0.0
    # none readable: an error, not a silent restart that would bury the run
    for step in ("step_00000001", "step_00000002"):
        (ckpts / step / "ema.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"--resume: no checkpoint in .* can be read: step_00000002"):
        train(dataclasses.replace(cfg, resume=True), "stage1")


def fresh() -> tuple[ConsistencyModel, ConsistencyModel, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = ConsistencyModel(build_network("tiny"))
    return model, copy.deepcopy(model), torch.optim.AdamW(model.parameters())


def test_resume_without_a_checkpoint_says_it_starts_at_zero(tmp_path):
    said: list[str] = []
    assert resume_checkpoint(tmp_path / "checkpoints", "tiny", *fresh(), said.append) is None
    assert said == [f"--resume: no checkpoint in {tmp_path / 'checkpoints'}; starting at step 0"]


def test_a_fresh_run_into_a_run_folder_is_refused(photos, lpips_file, tmp_path):
    """Without --resume, an OUT holding another run's checkpoints is refused before any work: the new
    run's checkpoints (steps below the old run's) were deleted as soon as written, as the oldest."""
    old = tmp_path / "checkpoints" / "step_00005000"
    old.mkdir(parents=True)
    (old / "state.json").write_text('{"step": 5000}')
    with pytest.raises(
        ValueError, match=r"holds the checkpoints of a run \(newest step_00005000\): --resume"
    ):
        train(options(photos, lpips_file, tmp_path), "stage1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]  # nothing written


def test_checkpoints_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A disk that fills while a checkpoint is written: one line naming it and the checkpoint --resume
    will take (it was an OSError traceback), and no half-written folder left, not even hidden."""
    model, ema, opt = fresh()
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, 1, model, ema, opt, "tiny", "test", {})

    def full(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)  # the optimizer state, after both weight files
    with pytest.raises(UserError) as info:
        save_checkpoint(folder, 2, model, ema, opt, "tiny", "test", {})
    assert str(info.value) == (
        f"cannot write checkpoint step_00000002 in {folder} (No space left on device); "
        "step_00000001 is intact: --resume continues from it"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000001"]


def gtasr_train(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "training.cli", "stage1", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def test_cli_crop_and_device_errors_are_one_line(photos, lpips_file, tmp_path):
    """A crop the preset cannot tile (--crop 64, click's old minimum, failed an assert deep in the
    network for every preset), --device cuda without a GPU and a term on the noise-free output
    without --direct-loss: one line each, exit 1, no traceback.
    Every other test here trains at --crop 128, click's minimum now, with the default preset."""
    base = ["--data", photos, "--lpips", lpips_file, "--steps", "1", "--out", tmp_path / "out"]
    cases = [(["--preset", "small", "--crop", "128"], "--crop 128: the small preset takes multiples of 256")]
    # terms on the noise-free output were silently left out without --direct-loss
    cases.append(
        (
            ["--crop", "128", "--grid-loss", "0.5", "--direct-texture", "1", "--gt-usm", "0.1"],
            "--grid-loss, --direct-texture, --gt-usm:",
        )
    )
    if not torch.cuda.is_available():
        cases.append((["--crop", "128", "--device", "cuda"], "--device cuda: no CUDA device"))
    for args, expected in cases:
        r = gtasr_train(*base, *args)
        lines = [line for line in r.stderr.splitlines() if line.strip() and "stage1" not in line]
        assert r.returncode == 1 and len(lines) == 1 and expected in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_stage2_starts_from_a_weights_file(photos, lpips_file, tiny_weights, tmp_path):
    """stage2 --init takes what stage1 --init takes, a weights file too (the shipped files are EMA
    weights, their run folders long gone)."""
    args = ["--data", photos, "--lpips", lpips_file, "--steps", "1", "--crop", "128", "--batch", "1"]
    args += ["--init", tiny_weights, "--out", tmp_path / "s2"]
    r = subprocess.run(
        [sys.executable, "-m", "training.cli", "stage2", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    logged = json.loads((tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["stage"] == "stage2" and logged["dtm"] > 0
    assert (tmp_path / "s2" / "ema.safetensors").is_file()
