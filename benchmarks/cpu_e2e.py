"""End to end on the CPU, as a user runs it: whole `gtasr-stream` processes (default flags) against
the peers run the way their own tools run on a CPU (FP32 eager, frame by frame: `benchmarks.peer_video`,
same decode, encode and audio copy), on a real clip resized to 480x270 with an AAC track -> 1920x1080.

    python -m benchmarks.cpu_e2e                      # 24 frames, 1 warm-up round + 3 timed rounds
    python -m benchmarks.cpu_e2e --frames 12 --rounds 1 --subjects gtasr,realesr_animevideov3

Each round runs every subject once as a subprocess, in an order that alternates between rounds (so a
load that drifts over the run falls on all of them), timed from start to exit (imports and model load
included). The result is the median wall time per subject, its fps, and the speed ratio against
realesr-animevideov3 both as a ratio of medians and as the median of the per-round ratios. The 1-minute
load average before each run is recorded: on a shared 2-core machine absolute times are noisy, ratios
of alternated runs much less so. Writes benchmarks/results/cpu_e2e_<device>_<date>.{json,md}.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import click
import torch

from gtasr_stream.engines.device import cpu_has_native_bf16

from .clips import resized_clip
from .common import (
    RESULTS,
    SHARED,
    environment,
    list_option,
    markdown_table,
    result_stem,
    write_json,
    write_text,
)

REFERENCE = "realesr_animevideov3"
# subject -> the command after `python -m` (IN and OUT are appended)
COMMANDS: dict[str, list[str]] = {
    "gtasr": ["gtasr_stream", "-q", "-y"],  # default flags: what a user gets
    "gtasr-fp32": ["gtasr_stream", "-q", "-y", "--fp32"],
    "gtasr-b1": ["gtasr_stream", "-q", "-y", "-b", "1"],
    "realesr_animevideov3": ["benchmarks.peer_video", "--peer", "realesr_animevideov3"],
    "span_x4": ["benchmarks.peer_video", "--peer", "span_x4"],
    "bicubic": ["benchmarks.peer_video", "--peer", "bicubic"],
}


def run_once(name: str, src: Path, dst: Path) -> dict[str, Any]:
    """One whole process of subject `name`: wall seconds, load before it, and what it wrote."""
    dst.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", *COMMANDS[name], str(src), str(dst)], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the process and its threads: less sensitive than wall time to what else runs
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise click.ClickException(f"{name} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.demux(v) if _.size)
        out = {
            "size": [v.codec_context.width, v.codec_context.height],
            "frames": frames,
            "audio": bool(c.streams.audio),
        }
    return {"wall_s": wall, "cpu_s": cpu, "load_1m_before": load, "output": out}


def summarise(runs: dict[str, list[dict[str, Any]]], frames: int) -> dict[str, dict[str, Any]]:
    """Median wall time and fps per subject; speed against the reference (ratio of medians, and the
    median of the ratios within each round: both runs of a round saw about the same load)."""
    out: dict[str, dict[str, Any]] = {}
    ref = runs.get(REFERENCE)
    for name, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        med = statistics.median(walls)
        cpus = [r["cpu_s"] for r in rs if "cpu_s" in r]
        row: dict[str, Any] = {"wall_s": walls, "median_s": med, "fps": frames / med}
        row["median_cpu_s"] = statistics.median(cpus) if cpus else None
        if ref:
            ref_med = statistics.median(r["wall_s"] for r in ref)
            row["speed_vs_animevideov3"] = ref_med / med
            ref_cpu = [r["cpu_s"] for r in ref if "cpu_s" in r]
            if cpus and ref_cpu:  # CPU seconds per clip, the reference's over this one's
                row["cpu_vs_animevideov3"] = statistics.median(ref_cpu) / statistics.median(cpus)
            row["speed_vs_animevideov3_per_round"] = statistics.median(
                a["wall_s"] / b["wall_s"] for a, b in zip(ref, rs, strict=True)
            )
        out[name] = row
    return out


@click.command()
@click.option("--frames", default=24, type=click.IntRange(1), show_default=True, help="Frames of the clip.")
@click.option("--size", default="480x270", show_default=True, help="Input WxH (the output is 4x).")
@click.option("--rounds", default=3, type=click.IntRange(1), show_default=True, help="Timed rounds (median).")
@click.option("--warmup", default=1, type=click.IntRange(0), show_default=True, help="Untimed rounds first.")
@click.option(
    "--subjects",
    default="gtasr,gtasr-fp32,realesr_animevideov3,span_x4,bicubic",
    callback=list_option(tuple(COMMANDS)),
    show_default=True,
)
@click.option("--source", default=SHARED / "videos" / "bikes.mp4", type=click.Path(path_type=Path))
@click.option("--results-dir", default=RESULTS, type=click.Path(path_type=Path))
def main(
    frames: int,
    size: str,
    rounds: int,
    warmup: int,
    subjects: tuple[str, ...],
    source: Path,
    results_dir: Path,
) -> None:
    """Whole-process fps of gtasr-stream (default flags) and the peers on the CPU, alternated."""
    w, h = (int(v) for v in size.lower().split("x"))
    env = environment(torch.device("cpu"), "benchmarks.cpu_e2e")
    with tempfile.TemporaryDirectory(prefix="gtasr-cpu-e2e-") as tmp:
        work = Path(tmp)
        src = resized_clip(work / f"in_{w}x{h}.mp4", source, w, h, frames)
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in subjects}
        for r in range(warmup + rounds):
            order = subjects if r % 2 == 0 else tuple(reversed(subjects))
            for name in order:
                rec = run_once(name, src, work / f"out_{name}.mp4")
                timed = r >= warmup
                print(
                    f"round {r + 1 - warmup if timed else 'warm-up'} {name}: {rec['wall_s']:.1f} s"
                    f" (load {rec['load_1m_before']:.2f})",
                    file=sys.stderr,
                    flush=True,
                )
                if timed:
                    runs[name].append(rec)
    summary = summarise(runs, frames)
    doc = {
        "benchmark": "cpu_e2e",
        "schema": 1,
        "env": {**env, "native_bf16": cpu_has_native_bf16(), "load_1m_after": os.getloadavg()[0]},
        "clip": {
            "source": source.name,
            "size": [w, h],
            "frames": frames,
            "audio": "AAC tone",
            "output": [4 * w, 4 * h],
        },
        "commands": {s: ["python", "-m", *COMMANDS[s], "IN", "OUT"] for s in subjects},
        "rounds": rounds,
        "warmup_rounds": warmup,
        "runs": runs,
        "summary": summary,
    }
    stem = results_dir / result_stem("cpu_e2e", env)
    write_json(Path(f"{stem}.json"), doc)
    table = to_markdown(doc)
    write_text(Path(f"{stem}.md"), table)
    print(table)
    print(f"wrote {stem}.json, .md")


def to_markdown(doc: dict[str, Any]) -> str:
    rows = [
        [
            name,
            s["median_s"],
            s["fps"],
            s.get("speed_vs_animevideov3"),
            s.get("speed_vs_animevideov3_per_round"),
            s.get("median_cpu_s"),
            s.get("cpu_vs_animevideov3"),
            " ".join(f"{t:.1f}" for t in s["wall_s"]),
        ]
        for name, s in doc["summary"].items()
    ]
    loads = [r["load_1m_before"] for rs in doc["runs"].values() for r in rs]
    c = doc["clip"]
    head = (
        f"{c['frames']} frames {c['size'][0]}x{c['size'][1]} -> {c['output'][0]}x{c['output'][1]}, whole processes,"
        f" median of {doc['rounds']} alternated rounds after {doc['warmup_rounds']} warm-up;"
        f" load average (1 min) before runs {min(loads):.2f}-{max(loads):.2f} on {doc['env']['cpu_count']} CPUs\n\n"
    )
    headers = [
        "subject",
        "median s",
        "fps",
        "× animevideov3 (medians)",
        "× animevideov3 (per round)",
        "CPU s",
        "× animevideov3 (CPU s)",
        "runs (s)",
    ]
    return head + markdown_table(headers, rows)


if __name__ == "__main__":
    main()
