"""gtasr-stream: real-time 4x video super-resolution with a one-step consistency model (GTASR).

    from gtasr_stream import Upscaler, upscale_video
    upscale_video("in.mp4", "out.mp4", Upscaler(device="cuda"))

Names are imported on first use, so that `gtasr-stream --help` does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Upscaler": "gtasr_stream.engines.upscaler",
    "upscale_video": "gtasr_stream.pipeline",
    "Stats": "gtasr_stream.pipeline",
    "EncodeOptions": "gtasr_stream.video.writer",
    "UserError": "gtasr_stream.errors",
}

if TYPE_CHECKING:
    from .engines.upscaler import Upscaler
    from .errors import UserError
    from .pipeline import Stats, upscale_video
    from .video.writer import EncodeOptions


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gtasr_stream' has no attribute {name!r}")


__all__ = ["EncodeOptions", "Stats", "Upscaler", "UserError", "__version__", "upscale_video"]
