"""Encoder settings from the flags (--crf, --preset, -e), checked before any frame is upscaled.

An encoder opens only when the first frame reaches it; a bad value then ended as "internal error …
returned 22" after the model had run, and an out-of-range CRF or an option the encoder does not
know passed without a word.  Here they are one line naming the flag, up front.
"""

from __future__ import annotations

import math
import os
import sys
from fractions import Fraction
from typing import Any

import av

from ..errors import UserError, held_stderr
from .realtime import keep_scheduling

# Which encoder option takes --crf, and its default when --crf is not given.
CRF_OPTION: dict[str, tuple[str, float]] = {
    "libx264": ("crf", 18),
    "libx265": ("crf", 20),
    "libsvtav1": ("crf", 30),
    "libvpx-vp9": ("crf", 24),
    "h264_nvenc": ("cq", 21),
    "hevc_nvenc": ("cq", 23),
    "av1_nvenc": ("cq", 28),
}
# The range each encoder takes (x264/x265 would clamp silently, SVT-AV1 refuses at the first frame).
CRF_RANGE: dict[str, tuple[float, float]] = {
    "libx264": (0, 51),
    "libx265": (0, 51),
    "libsvtav1": (1, 63),
    "libvpx-vp9": (0, 63),
    "h264_nvenc": (0, 51),
    "hevc_nvenc": (0, 51),
    "av1_nvenc": (0, 63),
}
NVENC = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
# SVT-AV1 prints a banner of 15 lines (and harmless warnings) at every open unless told errors only.
os.environ.setdefault("SVT_LOG", "1")


def encoder_options(
    codec: str, crf: float | None, preset: str | None, extra: dict[str, str]
) -> dict[str, str]:
    """The AVOptions the encoder opens with; raises UserError for a --crf it cannot take."""
    options = {}
    if codec in CRF_OPTION:
        key, default = CRF_OPTION[codec]
        if crf is not None:
            lo, hi = CRF_RANGE[codec]
            if not math.isfinite(crf) or not lo <= crf <= hi:
                raise UserError(f"--crf {crf:g}: {codec} takes {lo:g} to {hi:g} (lower is better)")
        options[key] = f"{crf if crf is not None else default:g}"
        if codec in NVENC:
            options["rc"] = "vbr"
        if codec == "libvpx-vp9":
            options["b"] = "0"
    elif crf is not None:
        raise UserError(f"--crf: {codec} has no CRF mode; set its quality with -e key=value")
    if codec == "libx265":
        options["x265-params"] = "log-level=error"  # x265 prints its own stats otherwise
    if preset:
        options["preset"] = preset
    options.update(extra)
    return options


def check_encoder_settings(
    codec: str,
    pix_fmt: str,
    size: tuple[int, int],  # (height, width) of the frames it will get (some encoders take few sizes)
    options: dict[str, str],
    preset: str | None,
    extra: dict[str, str],
) -> None:
    """Open the encoder once with `options`: a value it refuses, or an -e key it does not know, is
    a UserError naming the flag."""
    ctx: Any = av.codec.CodecContext.create(codec, "w")
    ctx.height, ctx.width = size
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 25)
    if codec == "mjpeg":
        ctx.color_range = 2  # JPEG is full range; the real stream is told so in `Sink.start`
    ctx.options = dict(options)
    try:
        with held_stderr() as printed, keep_scheduling():  # x264 prints "x264 [error]: invalid preset"
            ctx.open()  # itself: ours says it; SVT-AV1 run by root makes this thread real-time (realtime.py)
    except (av.FFmpegError, ValueError, OSError) as e:
        flags = [f"--preset {preset}"] if preset else []
        flags += [f"-e {k}={v}" for k, v in extra.items()]
        said = f" with {', '.join(flags)}" if flags else ""
        lines = printed().splitlines(keepends=True)
        errors = [line.strip() for line in lines if "error" in line.lower()]  # the encoder's own words
        sys.stderr.write("".join(line for line in lines if "error" not in line.lower()))  # not ours: out
        reason = errors[-1] if errors else getattr(e, "strerror", None) or str(e)
        raise UserError(f"{codec} cannot start{said} ({reason}); check the values") from None
    sys.stderr.write(printed())  # opened: whatever it said (a banner at most) goes out as before
    unknown = [k for k in extra if k in (ctx.options or {})]  # what the encoder left unread
    if unknown:
        raise UserError(f"-e {unknown[0]}: {codec} has no option '{unknown[0]}'")
