"""Segments per second of a long-video run with one worker (`-d cpu`, all cores in one process) and
with two worker processes (`-d cpu,cpu`), on a generated clip; JSON to benchmarks/results/.

    python -m benchmarks.segments [--frames 240] [--size 128x96]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from gtasr_stream import EncodeOptions
from gtasr_stream.segmented import upscale_segmented
from gtasr_stream.video.segments import plan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from media import make_clip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--size", default="128x96")
    ap.add_argument(
        "--segment", type=float, default=0.4, help="seconds per segment (keyframe every 5 frames)"
    )
    args = ap.parse_args()
    w, h = map(int, args.size.split("x"))
    engine = dict(weights=None, model_name=None, denoise=None, device="cpu", precision="auto", batch=4)
    engine |= dict(tile=0, tile_pad=16, noise="auto", seed=0, backend="torch")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "in.mkv", frames=args.frames, width=w, height=h, audio=True, gop=5)
        for name, devices in (("1 worker (-d cpu)", ["cpu"]), ("2 workers (-d cpu,cpu)", ["cpu", "cpu"])):
            t = time.perf_counter()
            stats = upscale_segmented(
                str(clip.path),
                str(Path(tmp) / f"out{len(devices)}.mkv"),
                seconds=args.segment,
                engine=engine,
                encode=EncodeOptions(),
                devices=devices,
            )
            elapsed = time.perf_counter() - t
            segs = plan(str(clip.path), None, args.segment)
            count = len(segs.segments) if segs else 0
            results[name] = {"seconds": round(elapsed, 2), "frames": stats.encoded, "segments": count}
            results[name]["segments_per_s"] = round(count / elapsed, 3)
            print(name, results[name], flush=True)
    out = {
        "what": "segmented upscale, tiny model, libx264, generated clip",
        "clip": f"{w}x{h}, {args.frames} frames at 25 fps, keyframe every 5 frames",
        "segment_seconds": args.segment,
        "machine": f"{platform.processor() or platform.machine()}, shared with training jobs (load not controlled)",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": results,
    }
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M")
    path = Path(__file__).parent / "results" / f"segments_cpu_{stamp}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(path)


if __name__ == "__main__":
    main()
