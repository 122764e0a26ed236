"""The frames viewers see, and their JPEGs (FFmpeg's mjpeg encoder through PyAV: no new dependency).

A `Shown` frame carries both views as planes already in JPEG's own colour space (BT.601 matrix,
full range, 4:2:0), converted on the model's device, so the CPU only does the entropy coding.
Each view is encoded once, by whichever thread asks first; PyAV releases the GIL while it
encodes, so views and viewers encode in parallel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import av
import numpy as np

from ..video.color import YUVLayout

JPEG_LAYOUT = YUVLayout(bits=8, sub_x=1, sub_y=1, matrix="bt601", range="full")  # JFIF
QUALITY = 3  # mjpeg quantiser, 2 (best) .. 31: 3 is about libjpeg quality 90
View = Literal["output", "input"]  # GTASR, and the bicubic upscale of the same frame
VIEWS: tuple[View, ...] = ("output", "input")
Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def encode_jpeg(planes: Planes, quality: int = QUALITY) -> bytes:
    """planes: Y (H,W), U, V (ceil(H/2), ceil(W/2)) uint8 in JPEG_LAYOUT -> a baseline JPEG file."""
    h, w = planes[0].shape
    frame = av.VideoFrame(w, h, "yuvj420p")
    for plane, data in zip(frame.planes, planes, strict=True):
        buf = np.frombuffer(memoryview(plane), dtype=np.uint8)
        buf.reshape(plane.height, plane.line_size)[:, : plane.width] = data
    ctx: Any = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj420p"
    ctx.time_base = Fraction(1, 30)
    ctx.qmin = ctx.qmax = quality  # a fixed quantiser: the default rate control starves single frames
    ctx.open()
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


@dataclass
class Shown:
    """One upscaled frame for the viewers (and the recording)."""

    t: float  # source time in s (rebased)
    captured_at: float  # time.monotonic() at capture
    upscaled_at: float  # time.monotonic() when both views were ready
    planes: dict[View, Planes]  # Y (4H,4W), U, V (2H,2W) uint8 in JPEG_LAYOUT, per view
    _jpegs: dict[View, bytes] = field(default_factory=dict)
    _busy: set[View] = field(default_factory=set)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def jpeg(self, view: View) -> bytes:
        """The view as a JPEG, encoded by the first caller while later ones wait for it."""
        with self._cond:
            self._cond.wait_for(lambda: view not in self._busy)
            if view in self._jpegs:
                return self._jpegs[view]
            self._busy.add(view)
        data = b""
        try:
            data = encode_jpeg(self.planes[view])
            return data
        finally:
            with self._cond:
                self._busy.discard(view)
                if data:
                    self._jpegs[view] = data
                self._cond.notify_all()
