"""Audio that the output container cannot hold as it is, re-encoded (AAC -> Opus for WebM), or
every audio stream re-encoded when the user names `--audio-codec`.

Copying packets stays the default everywhere it works: re-encoding lossy audio loses a little
quality, so it happens only where the alternative is dropping the stream, and is said.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import av

from ..errors import UserError
from . import keep

# What each container takes when the source's audio codec does not fit (FFmpeg's format names).
FALLBACK = {"webm": "libopus", "ogg": "libopus", "mp4": "aac", "mov": "aac", "matroska": "libopus"}
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


def check_encoder(codec: str) -> None:
    """UserError naming --audio-codec unless `codec` is an audio encoder FFmpeg has."""
    try:
        kind = av.codec.Codec(codec, "w").type
    except ValueError:  # UnknownCodecError
        raise UserError(f"--audio-codec: unknown encoder '{codec}'") from None
    if kind != "audio":
        raise UserError(f"--audio-codec: '{codec}' is not an audio encoder (it is for {kind})")


def reencoded(out: Any, src: Any, codec: str, requested: bool, warn: Callable[[str], None]) -> Any:
    """An output stream that re-encodes `src`'s audio with `codec`, its channels, tags and (where the
    encoder allows) rate kept; said in one warning.  UserError naming --audio-codec for a bad encoder."""
    check_encoder(codec)
    icc: Any = src.codec_context
    rate = icc.sample_rate or 48000
    if codec in ("libopus", "opus") and rate not in _OPUS_RATES:
        rate = 48000  # Opus runs at 48 kHz (and a few divisors): resampled
    try:
        stream: Any = out.add_stream(codec, rate=rate, layout=icc.layout.name if icc.layout else "stereo")
    except (av.FFmpegError, ValueError) as e:
        raise UserError(f"--audio-codec: cannot use {codec} in {out.format.name} ({e})") from None
    keep.copy_stream_tags(src, stream)
    why = "--audio-codec" if requested else f"{out.format.name} cannot hold {icc.name}"
    warn(f"audio stream #{src.index} ({icc.name}) re-encoded to {codec} ({why}; --audio-codec picks another)")
    return stream


def reencode(src: Any, out: Any, packet: av.Packet | None) -> list[av.Packet]:
    """Decode one packet of `src` (None: flush) and encode what came out into `out`'s stream."""
    packets: list[av.Packet] = []
    for frame in src.decode(packet):
        packets += out.encode(frame)  # PyAV resamples to the encoder's format, rate and frame size
    if packet is None:
        packets += out.encode(None)
    return packets
