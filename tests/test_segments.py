"""Long videos in segments: the output matches a one-pass run, a kill -9 resumes where it stopped, the
work folder is checked against the run, and two worker processes give the same file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import REPO
from media import make_clip

from gtasr_stream import EncodeOptions, Upscaler, upscale_video
from gtasr_stream.errors import UserError
from gtasr_stream.segmented import _prepare, segment_seconds, upscale_segmented, work_folder
from gtasr_stream.video.cut import make_cut
from gtasr_stream.video.segments import plan


def engine(weights: Path) -> dict:
    return dict(
        weights=str(weights),
        model_name=None,
        denoise=None,
        device="cpu",
        # fp32: the CPU's bf16 default (AMX) rounds differently with another thread split, and the
        # workers run other threads than this process; the comparisons below are bit for bit
        precision="fp32",
        batch=1,  # the same batches in every run: conv kernels may pick another algorithm per batch size
        tile=0,
        tile_pad=16,
        noise="auto",
        sharpen=None,
        seed=0,
        backend="torch",
    )


@pytest.fixture(scope="module")
def upscaler(tiny_weights: Path) -> Upscaler:
    return Upscaler(**engine(tiny_weights))


def contents(path: Path) -> tuple[list[int], list[bytes], list[tuple[str, int | None, bytes]]]:
    """(video pts, decoded frames as bytes, (type, pts, bytes) of every other packet)."""
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray().tobytes()) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        others = [(p.stream.type, p.pts, bytes(p)) for p in c.demux() if p.stream.type != "video" and p.size]
    return [p for p, _ in frames], [b for _, b in frames], others


def test_plan_cuts_at_keyframes(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=40, gop=6)
    segs = plan(str(clip.path), None, 0.3)
    assert segs is not None and len(segs.segments) >= 4
    assert sum(s.frames for s in segs.segments) == 40
    with av.open(str(clip.path)) as c:
        keys = {p.pts * p.time_base for p in c.demux(video=0) if p.is_keyframe and p.size}
    assert all(s.start in keys for s in segs.segments)
    assert all(a.end == b.start for a, b in zip(segs.segments, segs.segments[1:], strict=False))


@pytest.mark.parametrize(("codec", "ext"), [("ffv1", "mkv"), ("libx264", "mp4")])
def test_segments_match_one_pass(tmp_path, upscaler, tiny_weights, codec, ext):
    clip = make_clip(tmp_path / f"in.{ext}", frames=40, vfr=True, audio=True, subtitles=True, gop=6)
    opts = EncodeOptions(codec=codec)
    upscale_video(str(clip.path), str(tmp_path / f"one.{ext}"), upscaler, opts, outscale=1)
    dst = tmp_path / f"seg.{ext}"
    upscale_segmented(
        str(clip.path),
        str(dst),
        seconds=0.3,
        engine=engine(tiny_weights),
        encode=opts,
        outscale=1,
        upscaler=upscaler,
    )
    pts, frames, others = contents(dst)
    ref_pts, ref_frames, ref_others = contents(tmp_path / f"one.{ext}")
    assert pts == ref_pts and len(pts) == 40
    assert others == ref_others  # audio and subtitle packets: same bytes, same timestamps
    if codec == "ffv1":  # lossless: the very same pictures
        assert frames == ref_frames
    assert not work_folder(str(dst)).exists()  # removed after success


def test_segments_with_a_cut_match_one_pass(tmp_path, upscaler, tiny_weights):
    clip = make_clip(tmp_path / "in.mkv", frames=50, audio=True, gop=5)
    opts = EncodeOptions(codec="ffv1")
    cut = make_cut("0.32", None, 30)  # frame 8: OUT starts at 0
    upscale_video(str(clip.path), str(tmp_path / "one.mkv"), upscaler, opts, outscale=1, cut=cut)
    dst = tmp_path / "seg.mkv"
    upscale_segmented(
        str(clip.path),
        str(dst),
        seconds=0.2,
        engine=engine(tiny_weights),
        encode=opts,
        outscale=1,
        upscaler=upscaler,
        cut=cut,
    )
    assert contents(dst) == contents(tmp_path / "one.mkv")
    assert contents(dst)[0][0] == 0


def test_two_cpu_workers_match_one_pass(tmp_path, upscaler, tiny_weights):
    """-d cpu,cpu: the segments run in two worker processes (the path of -d cuda:0,cuda:1)."""
    clip = make_clip(tmp_path / "in.mkv", frames=30, audio=True, gop=5)
    opts = EncodeOptions(codec="ffv1")
    upscale_video(str(clip.path), str(tmp_path / "one.mkv"), upscaler, opts, outscale=1)
    dst = tmp_path / "two.mkv"
    stats = upscale_segmented(
        str(clip.path),
        str(dst),
        seconds=0.2,
        engine=engine(tiny_weights),
        encode=opts,
        outscale=1,
        devices=["cpu", "cpu"],
    )
    assert stats.encoded == 30
    assert contents(dst) == contents(tmp_path / "one.mkv")


def test_kill_9_then_the_same_command_resumes(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "in.mkv", frames=120, width=96, height=64, audio=True, subtitles=True, gop=4)
    dst = tmp_path / "out.mkv"
    folder = work_folder(str(dst))
    flags = ["--weights", str(tiny_weights), "-d", "cpu", "-b", "1", "--backend", "torch", "-c", "ffv1"]
    flags += ["-s", "1", "--segment", "0.1"]
    cmd = [sys.executable, "-m", "gtasr_stream", str(clip.path), str(dst), *flags]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    # the reference: the same command, uninterrupted (the same precision and batch as the resumed run;
    # an in-process fp32 upscaler differs from the CLI's bf16 CPU default by a code value here and there)
    reference = [sys.executable, "-m", "gtasr_stream", str(clip.path), str(tmp_path / "one.mkv"), *flags]
    subprocess.run(reference, cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(60_000):  # until the first segment file appears (or the run ends)
            if first.poll() is not None or (folder.is_dir() and any(folder.glob("seg-*"))):
                break
            time.sleep(0.005)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait()
    assert first.returncode == -signal.SIGKILL, "the run ended before a segment was written"
    done = sorted(p.name for p in folder.glob("seg-*"))
    total = len(json.loads((folder / "manifest.json").read_text())["segments"])
    assert 1 <= len(done) < total and not dst.exists()
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=600)
    assert second.returncode == 0, second.stderr
    # it redid only the segments without a file: at most the one in flight was lost
    assert f"resuming: {len(done)} of {total} segments already done" in second.stderr.decode()
    assert contents(dst) == contents(tmp_path / "one.mkv")
    assert not folder.exists()


def test_work_folder_of_another_run_is_refused(tmp_path):
    folder = tmp_path / "out.mkv.gtasr-segments"
    manifest = {"input": {"size": 1}, "weights_sha256": "a", "flags": {"crf": 18}, "segments": [[0, 1, 2]]}
    _prepare(folder, manifest, restart=False)
    (folder / "seg-00000.mov").write_bytes(b"done")
    _prepare(folder, manifest, restart=False)  # the same run: resumed, the segment kept
    assert (folder / "seg-00000.mov").exists()
    other = {**manifest, "flags": {"crf": 20}}
    with pytest.raises(UserError, match=r"holds segments of another run \(its flags differ\); --restart"):
        _prepare(folder, other, restart=False)
    _prepare(folder, other, restart=True)
    assert not (folder / "seg-00000.mov").exists()
    assert json.loads((folder / "manifest.json").read_text()) == other


def test_segment_flag_needs_files(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=2).path
    with pytest.raises(UserError, match=r"^--segment: IN and OUT must be files"):
        segment_seconds(str(src), "-", 5, None, False)
    with pytest.raises(UserError, match=r"^several devices and --ray: IN and OUT must be files"):
        segment_seconds(str(src), str(tmp_path / "x.png"), None, None, True)
    assert segment_seconds(str(src), str(tmp_path / "o.mkv"), None, None, False) is None  # short: one pass
    assert segment_seconds(str(src), str(tmp_path / "o.mkv"), None, None, True) == 60
    assert segment_seconds(str(src), str(tmp_path / "o.mkv"), 0, None, False) is None


def test_manifest_records_what_a_resume_compares(tmp_path, tiny_weights):
    from gtasr_stream.segmented import _manifest

    clip = make_clip(tmp_path / "in.mkv", frames=10, gop=3)
    segs = plan(str(clip.path), None, 0.1)
    assert segs is not None
    m = _manifest(str(clip.path), engine(tiny_weights), EncodeOptions(), 4.0, None, 0.1, segs)
    assert m["input"]["size"] == clip.path.stat().st_size
    assert len(m["weights_sha256"]) == 64 and m["flags"]["encode"] == asdict(EncodeOptions())
    assert np.all([len(s) == 3 for s in m["segments"]])
    # a flag that changes the pixels is compared on resume: --sharpen (None: the weights' own) too
    sharper = _manifest(
        str(clip.path), {**engine(tiny_weights), "sharpen": 0.2}, EncodeOptions(), 4.0, None, 0.1, segs
    )
    assert m["flags"]["sharpen"] is None and sharper["flags"]["sharpen"] == 0.2
