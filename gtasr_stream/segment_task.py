"""One segment of a long video as a plain task (`Task`) and the function that runs it (`run_task`):
what `segmented.py` runs in this process or in worker processes, and `ray_tasks.py` on Ray."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engines.upscaler import Upscaler
from .errors import UserError
from .pipeline import upscale_video
from .video.cut import Cut
from .video.writer import EncodeOptions

RAY_RETRIES = 3  # a segment whose Ray worker died is run again this many times


@dataclass(frozen=True)
class Task:
    """One segment's work: plain values, so that worker processes and Ray can take it."""

    src: str
    path: str  # the segment file to write (atomically)
    cut: Cut
    frames: int  # what the index says the segment holds
    encode: EncodeOptions
    outscale: float
    hwaccel: Any


def run_task(task: Task, up: Upscaler, warn: Callable[[str], None], on_progress: Any = None) -> int:
    """Upscale one segment into its file; a frame count other than the index's is refused (a seek
    that landed after the segment's start would otherwise lose frames silently)."""
    stats = upscale_video(
        task.src,
        task.path,
        up,
        task.encode,
        outscale=task.outscale,
        overwrite=True,
        hwaccel=task.hwaccel,
        cut=task.cut,
        on_progress=on_progress,
        on_warning=warn,
    )
    if stats.encoded != task.frames:
        Path(task.path).unlink(missing_ok=True)
        raise UserError(
            f"input '{task.src}': segment {Path(task.path).name} decoded {stats.encoded} frames where the"
            f" index has {task.frames}; it cannot be cut here (--segment 0 upscales it in one pass)"
        )
    return stats.encoded
