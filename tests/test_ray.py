"""--ray: the same segment tasks on a local Ray cluster of two CPU workers give the one-pass file."""

from __future__ import annotations

from pathlib import Path

import pytest
from media import make_clip
from test_segments import contents, engine

from gtasr_stream import EncodeOptions, Upscaler, upscale_video
from gtasr_stream.errors import UserError
from gtasr_stream.segmented import upscale_segmented, work_folder

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_two_workers_match_one_pass(tmp_path, tiny_weights, ray_cluster):
    clip = make_clip(tmp_path / "in.mkv", frames=30, audio=True, subtitles=True, gop=5)
    opts = EncodeOptions(codec="ffv1")
    up = Upscaler(**engine(tiny_weights))
    upscale_video(str(clip.path), str(tmp_path / "one.mkv"), up, opts, outscale=1)
    dst = tmp_path / "ray.mkv"
    seen = []
    stats = upscale_segmented(
        str(clip.path),
        str(dst),
        seconds=0.2,
        engine=engine(tiny_weights),
        encode=opts,
        outscale=1,
        devices=["cpu"],
        ray_address="auto",  # the cluster this process started is used as it is
        on_progress=lambda s: seen.append(s.encoded),
    )
    assert stats.encoded == 30 and seen[-1] == 30  # the one bar counted every segment's frames
    assert contents(dst) == contents(tmp_path / "one.mkv")
    assert not work_folder(str(dst)).exists()


def test_ray_task_error_is_one_line(tmp_path, tiny_weights, ray_cluster):
    clip = make_clip(tmp_path / "in.mkv", frames=10, gop=5)
    (tmp_path / "bad.safetensors").write_bytes(
        b"not weights"
    )  # hashed by the manifest, refused by the worker
    bad = {**engine(tiny_weights), "weights": str(tmp_path / "bad.safetensors")}
    with pytest.raises(UserError, match=r"bad\.safetensors"):
        upscale_segmented(
            str(clip.path),
            str(tmp_path / "o.mkv"),
            seconds=0.2,
            engine=bad,
            encode=EncodeOptions(),
            devices=["cpu"],
            ray_address="auto",
        )
    assert not Path(tmp_path / "o.mkv").exists()
