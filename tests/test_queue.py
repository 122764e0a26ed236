"""Habits of the field: -i/-o, several inputs or a folder into -o DIR, the others done when one fails."""

from __future__ import annotations

import av
import pytest
from conftest import run_cli
from media import make_clip, write_garbage
from test_images import write_png

from gtasr_stream.errors import UserError
from gtasr_stream.jobs import plan


def frames_of(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_i_and_o_are_aliases_of_in_and_out(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "in.mp4", frames=3)
    r = run_cli("-i", clip.path, "-o", tmp_path / "out.mkv", "--weights", tiny_weights)
    assert r.returncode == 0, r.stderr.decode()
    assert frames_of(tmp_path / "out.mkv") == 3


def test_folder_in_folder_out_keeps_going_past_a_bad_file(tmp_path, tiny_weights):
    src = tmp_path / "frames"
    src.mkdir()
    write_png(src / "a.png")
    write_garbage(src / "b.mp4")  # fails: the others are still done
    write_png(src / "c.png")
    (src / "notes.txt").write_text("not media: left alone")
    r = run_cli(src, "-o", tmp_path / "out", "--weights", tiny_weights)
    err = r.stderr.decode()
    print(err)
    assert r.returncode == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]  # no partial file
    assert f"error: input '{src / 'b.mp4'}' cannot be read as a video" in err
    assert err.rstrip().endswith(f"error: 2 of 3 inputs done; failed: {src / 'b.mp4'}")
    assert "[3/3] c.png: " in err  # one progress for the queue, naming the file it is on


def test_several_inputs_then_a_folder(tmp_path, tiny_weights):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png")
    r = run_cli(tmp_path / "a.png", tmp_path / "b.png", tmp_path / "new", "--weights", tiny_weights)
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a.png", "b.png"]
    assert "all 2 inputs done" in r.stderr.decode()


def test_plan(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for d in ("x", "y"):
        (tmp_path / d / "clip.mp4").write_bytes(b"")
    assert plan([str(tmp_path / "x" / "clip.mp4")], "o.mkv") == [(str(tmp_path / "x" / "clip.mp4"), "o.mkv")]
    assert plan([str(tmp_path / "x" / "clip.mp4")], str(tmp_path / "y")) == [
        (str(tmp_path / "x" / "clip.mp4"), str(tmp_path / "y" / "clip.mp4"))
    ]
    with pytest.raises(UserError, match="would both write"):
        plan([str(tmp_path / "x"), str(tmp_path / "y")], str(tmp_path / "out"))
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        plan([str(tmp_path / "x"), "b.mp4"], str(tmp_path / "file"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no video or image files"):
        plan([str(tmp_path / "empty")], str(tmp_path / "out"))
    with pytest.raises(UserError, match="is a folder: OUT must be a folder"):
        plan([str(tmp_path / "x")], str(tmp_path / "out.mp4"))
    with pytest.raises(UserError, match="one at a time"):
        plan(["-", "a.mp4"], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing made for a refused plan
