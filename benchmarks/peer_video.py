"""A peer network (or bicubic) upscaling a video the way its own tool runs on a CPU: FP32 eager, one
frame per call, contiguous tensors, through our decode ‖ upscale ‖ encode pipeline, so that decode,
encode, audio copy and container are the same as `gtasr-stream`'s. `benchmarks.cpu_e2e` runs it as
a whole process beside `gtasr-stream`.

    python -m benchmarks.peer_video IN OUT --peer realesr_animevideov3

Why our pipeline and not Real-ESRGAN's script: its `inference_realesrgan_video.py` also decodes and
encodes in other processes (ffmpeg pipes) while the model runs frame by frame in FP32 on a CPU
(`half=False` there); running that loop inside our pipeline keeps everything but the network equal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, cast

import click
import torch
import torch.nn.functional as F

from gtasr_stream.errors import UserError
from gtasr_stream.model import SCALE
from gtasr_stream.pipeline import upscale_video
from gtasr_stream.video.writer import EncodeOptions
from training.peers import PEER_FILES, PeerName, load_peer

from .common import SHARED

PEERS = ("bicubic", *PEER_FILES)


class PeerUpscaler:
    """What `upscale_video` needs of an upscaler: device, batch, tile, and RGB (B,3,h,w) -> (B,3,4h,4w)."""

    scale = SCALE

    def __init__(self, name: str, weights_dir: Path) -> None:
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.batch, self.tile, self.tile_pad = 1, 0, 0  # frame by frame, as the peers' own tools
        self.model = None  # memory.per_pixel: sized as an unknown network (the larger figure)
        self.net = None if name == "bicubic" else load_peer(cast(PeerName, name), weights_dir)

    @torch.inference_mode()
    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        # rgb (B,3,h,w) float32 in [0,1] -> (B,3,4h,4w) float32 in [0,1]
        if self.net is None:
            return F.interpolate(rgb, scale_factor=SCALE, mode="bicubic", align_corners=False).clamp_(0, 1)
        return torch.cat([self.net(rgb[i : i + 1]) for i in range(rgb.shape[0])])


@click.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--peer", type=click.Choice(PEERS), default="realesr_animevideov3", show_default=True)
@click.option("--weights-dir", default=SHARED / "weights", type=click.Path(path_type=Path))
def main(src: str, dst: str, peer: str, weights_dir: Path) -> None:
    """Upscale SRC 4x into DST with a peer network, FP32 eager, one frame per call."""
    t0 = time.perf_counter()
    up: Any = PeerUpscaler(peer, weights_dir)
    try:
        stats = upscale_video(src, dst, up, EncodeOptions(), overwrite=True)
    except UserError as e:
        raise click.ClickException(str(e)) from None
    print(
        f"{peer}: {stats.encoded} frames ({stats.codec}) in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
