"""The pipeline benchmark's input clips: a generated one at any size, with an AAC track, and the
first frames of a real clip cut by stream copy. PyAV only; no other benchmark code is needed here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F

AUDIO_RATE = 48_000


def make_clip(path: Path, width: int, height: int, frames: int, rate: int = 30, audio: bool = True) -> Path:
    """A clip of a panning multi-scale random texture (detail for the encoders to work on), H.264
    yuv420p at `rate` fps, with a 440 Hz AAC tone as long as the video when `audio`."""
    g = torch.Generator().manual_seed(0)
    th, tw = height + frames, width + 2 * frames  # pan 2 px right and 1 px down a frame
    texture = torch.zeros(1, 3, th, tw)
    for div, weight in ((32, 0.55), (8, 0.3), (1, 0.15)):  # coarse shapes, mid detail, fine grain
        noise = torch.rand(1, 3, max(2, th // div), max(2, tw // div), generator=g)
        texture += weight * F.interpolate(noise, size=(th, tw), mode="bicubic", align_corners=False)
    rgb = (texture[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (th,tw,3)
    crops = (np.ascontiguousarray(rgb[i : i + height, 2 * i : 2 * i + width]) for i in range(frames))
    return write_clip(path, crops, width, height, frames, rate, audio)


def resized_clip(
    path: Path, src: Path, width: int, height: int, frames: int, rate: int = 25, audio: bool = True
) -> Path:
    """The first `frames` frames of the real clip `src` resized to width x height (bicubic), written
    like `make_clip` (H.264, and an AAC tone when `audio`): real content at a size no clip has."""

    def rgb() -> Iterator[np.ndarray]:
        with av.open(str(src)) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i == frames:
                    return
                yield f.reformat(
                    width=width, height=height, format="rgb24", interpolation="BICUBIC"
                ).to_ndarray()

    return write_clip(path, rgb(), width, height, frames, rate, audio)


def write_clip(
    path: Path, rgb: Iterable[np.ndarray], width: int, height: int, frames: int, rate: int, audio: bool
) -> Path:
    """H.264 yuv420p (crf 18, veryfast) of `frames` RGB (height,width,3) uint8 arrays at `rate` fps,
    with a 440 Hz AAC tone as long as the video when `audio`, interleaved."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "18"})
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound: list[av.Packet] = []  # every stream must exist before the first packet is muxed
        if audio:
            stream = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            n = round(frames / rate * AUDIO_RATE)
            tone = (0.25 * np.sin(2 * np.pi * 440 * np.arange(n) / AUDIO_RATE)).astype(np.float32)
            a = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            a.sample_rate, a.pts = AUDIO_RATE, 0
            sound = stream.encode(a) + stream.encode(None)  # PyAV cuts it into 1024-sample frames
        images = iter(rgb)
        for i in range(frames + 1):
            if i < frames:
                frame = av.VideoFrame.from_ndarray(next(images), format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, rate)
                out.mux(video.encode(frame))
            else:
                out.mux(video.encode(None))
            # interleave the audio up to this frame's time, so no muxer has to buffer a whole stream
            while sound and (
                i == frames or (sound[0].pts or 0) * Fraction(1, AUDIO_RATE) <= Fraction(i, rate)
            ):
                out.mux(sound.pop(0))
    return path


def cut_clip(src: Path, dst: Path, max_frames: int) -> int:
    """The first `max_frames` video packets of `src` (decode order, so all decodable), stream-copied
    with the packets of other streams up to that point; returns the number of video frames."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=inp.format.name.split(",")[0]) as out:
        vin = inp.streams.video[0]
        streams = {
            s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")
        }
        count = 0
        for packet in inp.demux(*[inp.streams[i] for i in streams]):
            if packet.dts is None and packet.size == 0:
                continue
            if packet.stream.index == vin.index:
                if count == max_frames:
                    break
                count += 1
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    with av.open(str(dst)) as check:
        return sum(1 for _ in check.decode(video=0))


def clip_info(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return {
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "codec": v.codec_context.name,
            "audio": bool(c.streams.audio),
        }
