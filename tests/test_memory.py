"""CPU memory: the batch (then tiles) sized from the memory available, said once."""

from __future__ import annotations

import av
from media import make_clip

from gtasr_stream import Upscaler, upscale_video
from gtasr_stream.engines import memory
from gtasr_stream.engines.memory import fit

GIB = 2**30


def test_fit_halves_the_batch_then_tiles():
    per_px = 8000  # the tiny preset's figure
    frame = 528 * 720 * per_px  # 3.0 GB: the 720x528 clip of issue 18
    assert fit(4, 0, 16, 528, 720, per_px, 5 * frame) == (4, 0)
    assert fit(4, 0, 16, 528, 720, per_px, 2.5 * frame) == (2, 0)
    assert fit(4, 0, 16, 528, 720, per_px, 1.1 * frame) == (1, 0)
    batch, tile = fit(4, 0, 16, 528, 720, per_px, 0.5 * frame)
    assert batch == 1 and tile % 16 == 0 and (tile + 32) ** 2 * per_px <= 0.5 * frame
    assert fit(4, 128, 16, 2160, 3840, per_px, 4 * 160**2 * per_px) == (4, 128)  # tiles given: by tile


def test_little_memory_lowers_the_batch_and_says_so(tmp_path, tiny_weights, monkeypatch):
    clip = make_clip(tmp_path / "in.mp4", frames=5)
    one_frame = 64 * 48 * memory.BYTES_PER_INPUT_PIXEL["tiny"]
    monkeypatch.setattr(memory, "available_bytes", lambda: int(1.5 * one_frame / memory.SHARE))
    up = Upscaler(weights=tiny_weights, device="cpu", batch=4)
    warnings: list[str] = []
    stats = upscale_video(str(clip.path), str(tmp_path / "out.mkv"), up, on_warning=warnings.append)
    print(warnings)
    assert up.batch == 1 and stats.encoded == 5
    assert (
        len(warnings) == 1 and "batch 4 -> 1 for 64x48 frames" in warnings[0] and "-b and -t" in warnings[0]
    )
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert len(list(c.decode(video=0))) == 5


def test_enough_memory_changes_nothing(tmp_path, tiny_weights, monkeypatch):
    clip = make_clip(tmp_path / "in.mp4", frames=2)
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 * GIB)
    up = Upscaler(weights=tiny_weights, device="cpu", batch=4)
    warnings: list[str] = []
    upscale_video(str(clip.path), str(tmp_path / "out.mkv"), up, on_warning=warnings.append)
    assert up.batch == 4 and warnings == []
