"""Frames between host and device for the pipeline (NOTES.md candidates 4 and 5).

Up: one plane of each frame of a batch is stacked straight into one page-locked (pinned) buffer and
uploaded asynchronously; before, `np.stack` and `pin_memory()` copied it twice.  Down: the output
planes are copied into pinned buffers on a separate copy stream, and the batch is handed over only
when its copy event has fired, so the download of batch k overlaps the upload and network of batch
k+1 (double buffering), and the upscale thread no longer waits on each plane's pageable copy.

Pinned buffers come from torch's caching host allocator, which reuses them once the copies recorded
on them have finished; a buffer stays alive while the numpy views handed to the encoder do.  On the
CPU nothing is pinned, nothing is copied twice and `Download.ready` is true at once: the pipeline
keeps its order of work there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def stack(planes: Sequence[np.ndarray], pin: bool = False) -> torch.Tensor:
    """(B,h,w) of B equally shaped planes in one copy, in pinned memory with `pin`.

    >8-bit samples (uint16) are stored as int16 bit for bit (see `video.color.codes`).
    """
    dtype = planes[0].dtype
    host = torch.empty(
        (len(planes), *planes[0].shape),
        dtype=torch.uint8 if dtype == np.uint8 else torch.int16,
        pin_memory=pin,
    )
    np.stack(planes, out=host.numpy().view(dtype))
    return host


def upload(planes: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """Stack one plane of each frame and put it on `device`: (B,h,w) uint8, or int16 above 8 bits."""
    if device.type != "cuda":
        return stack(planes)
    return stack(planes, pin=True).to(device, non_blocking=True)


class Download:
    """The planes of one batch on their way to the host; `frames()` once `ready` (or waits)."""

    def __init__(self, planes: Sequence[torch.Tensor], done: torch.cuda.Event | None = None) -> None:
        self._planes = list(planes)
        self._done = done

    @property
    def ready(self) -> bool:
        return self._done is None or self._done.query()

    def frames(self) -> list[Planes]:
        """(Y, U, V) numpy planes of each frame, views into the host buffers."""
        if self._done is not None:
            self._done.synchronize()
        y, u, v = (p.numpy() for p in self._planes)
        return [(y[i], u[i], v[i]) for i in range(len(y))]


def download(planes: Sequence[torch.Tensor], copy_stream: torch.cuda.Stream | None) -> Download:
    """Start copying (B,h,w) planes to the host: on `copy_stream` into pinned memory on CUDA, after
    the work queued so far on the current stream; the planes as they are on the CPU."""
    if planes[0].device.type != "cuda" or copy_stream is None:
        return Download([p.cpu() for p in planes])
    copy_stream.wait_stream(torch.cuda.current_stream(planes[0].device))
    hosts = []
    with torch.cuda.stream(copy_stream):
        for p in planes:
            host = torch.empty(p.shape, dtype=p.dtype, pin_memory=True)
            host.copy_(p, non_blocking=True)
            p.record_stream(copy_stream)  # its memory must not go to the next batch before this copy read it
            hosts.append(host)
        done = torch.cuda.Event(blocking=True)  # the waiting thread sleeps: encoders need the cores
        done.record(copy_stream)
    return Download(hosts, done)
