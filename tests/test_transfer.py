"""transfer.py: planes stacked once into the (pinned, on CUDA) upload buffer, bit for bit what the old
np.stack + view gave; downloads handed to the encoder in order even while the next batch runs (the
double buffering CUDA uses, driven here on the CPU with a download that is not ready yet); and, on a
GPU, the pinned/copy-stream path against the synchronous one."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from media import make_clip

from gtasr_stream import Upscaler, pipeline, upscale_video
from gtasr_stream.transfer import Download, download, stack, upload
from gtasr_stream.video.color import YUVLayout
from gtasr_stream.video.reader import Frame

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _planes(dtype: type, n: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Strided views, like PyAV's planes with line padding; 16-bit values above 32767 included."""
    g = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 65535
    return [g.integers(0, top + 1, (6, 12), dtype=dtype)[:, :10] for _ in range(n)]


def _old_stack(planes: list[np.ndarray]) -> torch.Tensor:  # what the pipeline uploaded before
    a = np.stack(planes)
    return torch.from_numpy(a if a.dtype == np.uint8 else a.view(np.int16))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_stack_is_the_old_upload_bit_for_bit(dtype: type) -> None:
    planes = _planes(dtype)
    got = stack(planes)
    assert got.dtype == (torch.uint8 if dtype == np.uint8 else torch.int16) and got.shape == (3, 6, 10)
    assert torch.equal(got, _old_stack(planes))
    assert torch.equal(upload(planes, torch.device("cpu")), got)


def test_download_on_the_cpu_is_ready_and_hands_out_each_frame() -> None:
    y, u, v = torch.arange(24).view(2, 3, 4), torch.arange(8).view(2, 2, 2), torch.arange(8, 16).view(2, 2, 2)
    d = download([y, u, v], None)
    assert d.ready
    frames = d.frames()
    assert len(frames) == 2 and all(isinstance(p, np.ndarray) for p in frames[1])
    assert np.array_equal(frames[1][0], y[1].numpy()) and np.array_equal(frames[0][2], v[0].numpy())


class _Late(Download):
    """A download whose copy is never finished early: the pipeline must keep it in flight."""

    def __init__(self, inner: Download, events: list[str], n: int) -> None:
        super().__init__([])
        self.inner, self.events, self.n = inner, events, n

    @property
    def ready(self) -> bool:
        return False

    def frames(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        self.events.append(f"handed over {self.n}")
        return self.inner.frames()


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]


def test_a_batch_in_flight_reaches_the_encoder_in_order(
    tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=7, audio=True)
    up = Upscaler(weights=tiny_weights, device="cpu", batch=2)
    upscale_video(str(clip.path), str(tmp_path / "sync.mkv"), up)
    real, events, batches = pipeline._upscale_batch, [], itertools.count()

    def late(*args: object, **kw: object) -> Download:
        n = next(batches)
        events.append(f"computed {n}")
        return _Late(real(*args, **kw), events, n)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "_upscale_batch", late)
    stats = upscale_video(str(clip.path), str(tmp_path / "overlap.mkv"), up)
    assert stats.encoded == stats.upscaled == 7
    # batch k goes to the encoder only after batch k+1 was computed; the last one at the end
    assert events == [
        "computed 0",
        "computed 1",
        "handed over 0",
        "computed 2",
        "handed over 1",
        "computed 3",
        "handed over 2",
        "handed over 3",
    ]
    sync, overlap = _decoded(tmp_path / "sync.mkv"), _decoded(tmp_path / "overlap.mkv")
    assert len(overlap) == 7 and all(np.array_equal(a, b) for a, b in zip(sync, overlap, strict=True))
    with av.open(str(tmp_path / "overlap.mkv")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]


# --------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@cuda
def test_pinned_upload_and_copy_stream_download_match_the_cpu() -> None:
    dev = torch.device("cuda")
    for dtype in (np.uint8, np.uint16):
        planes = _planes(dtype)
        assert torch.equal(upload(planes, dev).cpu(), _old_stack(planes))
    g = torch.Generator(device=dev).manual_seed(0)
    src = [torch.randint(0, 255, (4, 540, 960), generator=g, device=dev, dtype=torch.uint8) for _ in range(3)]
    expected = [p.cpu() for p in src]
    d = download(src, torch.cuda.Stream())
    del src  # their memory goes back to the allocator: the copy stream's use must keep it from reuse
    clobber = [torch.full((4, 540, 960), 7, device=dev, dtype=torch.uint8) for _ in range(6)]
    frames = d.frames()
    assert all(np.array_equal(frames[i][c], expected[c][i].numpy()) for i in range(4) for c in range(3))
    assert clobber[0][0, 0, 0].item() == 7


@pytest.mark.gpu
@cuda
def test_upscale_batch_with_a_copy_stream_equals_the_synchronous_path(
    tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # two model calls, one result
    up = Upscaler(weights=tiny_weights, device="cuda", batch=4)
    layout = YUVLayout(8, 1, 1, "bt709", "limited")
    g = np.random.default_rng(1)
    frames = [
        Frame(
            (
                g.integers(16, 236, (48, 64), dtype=np.uint8),
                g.integers(16, 241, (24, 32), dtype=np.uint8),
                g.integers(16, 241, (24, 32), dtype=np.uint8),
            ),
            layout,
            i,
            0,
            None,  # type: ignore[arg-type]
        )
        for i in range(4)
    ]
    sync = pipeline._upscale_batch(up, frames, layout, (192, 256), None).frames()
    overlapped = pipeline._upscale_batch(up, frames, layout, (192, 256), torch.cuda.Stream()).frames()
    for a, b in zip(sync, overlapped, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
