"""End-to-end throughput: the real pipeline (decode ‖ upscale ‖ encode) on generated and real clips.

    python -m benchmarks.pipeline --device cuda --presets tiny --sizes 480x270,960x540 --frames 300
    python -m benchmarks.pipeline --device cpu --presets tiny --sizes 480x270 --frames 8 --max-frames 8

For each clip x preset x backend x precision x batch it first times the model alone on the same
Upscaler, size and batch (`model_fps`, the ceiling), then runs `upscale_video` once per decoder
(CPU, NVDEC on CUDA) and encoder (libx264, libsvtav1, NVENC when the GPU has it): end-to-end fps,
each stage's busy time and fps, the bottleneck stage and e2e / model-only. Generated clips carry an
AAC track, and by default the output is a real Matroska file in a temporary folder, so audio is
copied as in the targets (`--output null` encodes to a null muxer like `gtasr-stream --benchmark`).
Writes benchmarks/results/pipeline_<device>_<date>.{json,md}.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, cast

import av
import click
import torch

from gtasr_stream.engines.device import is_oom, resolve_device, resolve_dtype
from gtasr_stream.engines.upscaler import Upscaler
from gtasr_stream.errors import UserError
from gtasr_stream.model import SCALE, ConsistencyModel, build_network
from gtasr_stream.pipeline import STAGES, upscale_video
from gtasr_stream.video.writer import EncodeOptions

from .clips import clip_info, cut_clip, make_clip
from .common import (
    RESULTS,
    SHARED,
    TooSlow,
    batches_option,
    dtype_name,
    environment,
    fresh_input,
    list_option,
    markdown_table,
    result_stem,
    sizes_option,
    synchronizer,
    time_calls,
    write_json,
    write_text,
)

CPU_ENCODERS = ("libx264", "libsvtav1")
NVENC_ENCODERS = ("h264_nvenc", "hevc_nvenc")
REAL_CLIPS = ("bikes.mp4", "carphone_pristine.mp4", "vtest.avi")
Output = Literal["file", "null"]


@dataclass(frozen=True)
class PipelineOptions:
    """What one `python -m benchmarks.pipeline` run measures."""

    presets: tuple[str, ...]  # our network presets (random weights: speed does not depend on values)
    backends: tuple[str, ...]  # Upscaler backends; one that cannot be built is recorded 'unavailable'
    precisions: tuple[str, ...]  # fp32 | fp16 | bf16 | auto (fp16 on CUDA, fp32 on CPU)
    batches: tuple[int, ...]  # frames per network call (the pipeline's --batch)
    sizes: tuple[tuple[int, int], ...]  # generated clips' (width, height); none with --sizes none
    frames: int  # frames of each generated clip
    real: tuple[str, ...]  # clips from --videos-dir, cut to --max-frames by stream copy
    max_frames: int  # longest real clip run
    encoders: tuple[str, ...]  # 'auto' or encoder[:preset] names, e.g. libx264:veryfast
    decoders: tuple[str, ...]  # 'auto' (cpu, plus nvdec on CUDA), 'cpu', 'nvdec'
    output: Output  # 'file': a real file (audio copied), deleted after; 'null': a null muxer
    repeats: int  # timed calls of the model-only measurement
    warmup: int  # untimed calls before them, which also warm up the pipeline's Upscaler
    device: str  # auto | cpu | cuda | cuda:N
    max_seconds: float  # per run: skip when frames / model-only fps says it would take longer
    threads: int | None  # torch CPU threads (None: torch's default)
    videos_dir: Path  # real clips (../shared/data/videos)
    results_dir: Path  # where the JSON and markdown table go


# ------------------------------------------------------------------------------------------ clips
def prepare_clips(opts: PipelineOptions, work: Path) -> list[dict[str, Any]]:
    """Generated clips at each size, then the real clips (cut), each with its size and frame count."""
    clips: list[dict[str, Any]] = []
    for w, h in opts.sizes:
        path = make_clip(work / f"generated_{w}x{h}.mp4", w, h, opts.frames)
        clips.append({"name": path.name, "kind": "generated", "path": str(path), "frames": opts.frames})
    for name in opts.real:
        src = opts.videos_dir / name
        if not src.is_file():
            clips.append({"name": name, "kind": "real", "path": None, "reason": f"{src} not found"})
            continue
        dst = work / f"cut_{name}"
        frames = cut_clip(src, dst, opts.max_frames)
        clips.append({"name": name, "kind": "real", "path": str(dst), "frames": frames, "source": str(src)})
    for c in clips:
        if c["path"]:
            c.update(clip_info(Path(c["path"])))
    return clips


# ------------------------------------------------------------------------------ encoders, decoders
def encoder_problem(name: str, cuda: bool) -> str | None:
    """Why `name` cannot encode here, or None. NVENC is in PyAV's wheel everywhere: only opening it
    on a GPU that has the encoder tells (the H100, like the A100, has NVDEC but no NVENC)."""
    if name in NVENC_ENCODERS and not cuda:
        return "NVENC is only tried with --device cuda"
    try:
        codec = av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return f"this PyAV/FFmpeg has no encoder '{name}'"
    if codec.type != "video":
        return f"'{name}' is not a video encoder"
    try:
        ctx: Any = av.codec.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 256, 256, "yuv420p", Fraction(1, 25)
        ctx.open()  # freed with ctx (PyAV 18 has no close())
    except Exception as e:
        return f"'{name}' does not open here: {e}"
    return None


def resolve_encoders(names: tuple[str, ...], cuda: bool) -> dict[str, dict[str, Any]]:
    """{'libx264:veryfast': {'codec', 'preset', 'available', 'reason'}} for 'auto' or the given names."""
    if names == ("auto",):
        names = CPU_ENCODERS + NVENC_ENCODERS
    out = {}
    for spec in names:
        codec, _, preset = spec.partition(":")
        problem = encoder_problem(codec, cuda)
        out[spec] = {
            "codec": codec,
            "preset": preset or None,
            "available": problem is None,
            "reason": problem,
        }
    return out


def resolve_decoders(names: tuple[str, ...], cuda: bool) -> dict[str, dict[str, Any]]:
    if names == ("auto",):
        names = ("cpu", "nvdec")
    out = {}
    for d in names:
        reason = None if d == "cpu" or cuda else "NVDEC decoding is only tried with --device cuda"
        out[d] = {"available": reason is None, "reason": reason}
    return out


# ------------------------------------------------------------------------------------------------ run
def run(opts: PipelineOptions, module: str = "benchmarks.pipeline") -> dict[str, Any]:
    """Measure every run; returns the result document (also written to opts.results_dir)."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device)
    cuda = device.type == "cuda"
    env = environment(device, module)
    encoders = resolve_encoders(opts.encoders, cuda)
    decoders = resolve_decoders(opts.decoders, cuda)
    for name, e in {**encoders, **decoders}.items():
        if not e["available"]:
            _say(f"{name}: not used: {e['reason']}")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gtasr-bench-") as tmp:
        work = Path(tmp)
        clips = prepare_clips(opts, work)
        for precision in opts.precisions:
            prec = dtype_name(resolve_dtype(cast(Any, precision), device))
            for preset in opts.presets:
                for backend in opts.backends:
                    ident = {"preset": preset, "backend": backend, "precision": prec}
                    notes: list[str] = []
                    try:
                        up = Upscaler(
                            model=ConsistencyModel(build_network(preset)),
                            device=str(device),
                            precision=cast(Any, precision),
                            batch=max(opts.batches),
                            backend=cast(Any, backend),
                            noise="fixed",
                            on_warning=notes.append,
                        )
                    except (UserError, ValueError, ImportError) as e:
                        runs.append({**ident, "status": "unavailable", "reason": f"not available: {e}"})
                        _say(f"{preset} {backend} {prec}: not available: {e}")
                        continue
                    ident["backend"] = up.backend
                    for clip in clips:
                        for b in opts.batches:
                            seen = len(notes)
                            new = clip_runs(up, b, clip, ident, encoders, decoders, opts, work)
                            for r in new:  # what the engine said (OOM ladder, CPU fallback) goes with them
                                r["notes"] = notes[seen:]
                            runs += new
                    del up
                    if cuda:
                        torch.cuda.empty_cache()
        for c in clips:
            c.pop("path", None)
    doc: dict[str, Any] = {
        "benchmark": "pipeline",
        "schema": 1,
        "env": env,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "encoders": encoders,
        "decoders": decoders,
        "clips": clips,
        "runs": runs,
    }
    stem = opts.results_dir / result_stem("pipeline", env)
    doc["files"] = {"json": f"{stem.name}.json", "markdown": f"{stem.name}.md"}  # beside this file
    table = f"End-to-end pipeline on {env['device_name']} ({env['date']})\n\n" + to_markdown(doc)
    write_text(Path(f"{stem}.md"), table)
    write_json(Path(f"{stem}.json"), doc)
    print(table)
    print(f"wrote {stem}.json, .md")
    return doc


def clip_runs(
    up: Upscaler,
    b: int,
    clip: dict[str, Any],
    ident: dict[str, Any],
    encoders: dict[str, dict[str, Any]],
    decoders: dict[str, dict[str, Any]],
    opts: PipelineOptions,
    work: Path,
) -> list[dict[str, Any]]:
    """Model-only fps on this Upscaler at the clip's size and batch b, then one e2e run per decoder x encoder."""
    base = {**ident, "batch": b, "clip": clip["name"], "clip_kind": clip["kind"]}
    if not clip.get("path"):
        return [{**base, "status": "skipped", "reason": clip.get("reason")}]
    w, h, frames = clip["width"], clip["height"], clip["frames"]
    base.update(lr_size=[w, h], hr_size=[SCALE * w, SCALE * h], frames=frames)
    up.batch, up.tile = b, 0
    model = _model_only(up, b, (w, h), opts)
    base.update(model)
    out = []
    for dec, d in decoders.items():
        for spec, e in encoders.items():
            rec = {**base, "decode": dec, "encoder": spec}
            if not (d["available"] and e["available"]):
                continue  # listed once in the document's encoders/decoders with the reason
            if model["model_fps"] is None:
                rec.update(status="skipped", reason=f"model-only: {model['model_reason']}")
            elif frames / model["model_fps"] > opts.max_seconds:
                rec.update(
                    status="skipped",
                    reason=f"{frames} frames at the model-only {model['model_fps']:.3g} fps would exceed"
                    f" --max-seconds {opts.max_seconds:g}",
                )
            else:
                rec.update(_e2e(up, clip, dec, e, opts, work))
            if rec.get("fps") and model["model_fps"]:
                rec["e2e_over_model"] = rec["fps"] / model["model_fps"]
            out.append(rec)
            _say(_one_line(rec))
    return out


def _model_only(up: Upscaler, b: int, size: tuple[int, int], opts: PipelineOptions) -> dict[str, Any]:
    w, h = size
    try:
        t = time_calls(
            up,
            lambda i: fresh_input((b, 3, h, w), torch.float32, up.device, seed=1000 + i),
            warmup=opts.warmup,
            repeats=opts.repeats,
            sync=synchronizer(up.device),
            max_seconds=opts.max_seconds,
        )
    except TooSlow as e:
        return {"model_fps": None, "model_reason": str(e)}
    except Exception as e:
        if not is_oom(e):
            raise
        return {"model_fps": None, "model_reason": f"out of memory at batch {b}"}
    finally:
        if up.device.type == "cuda":
            torch.cuda.empty_cache()
    if (up.batch, up.tile) != (b, 0):  # the out-of-memory ladder stepped in: not batch b any more
        reason = f"out of memory at batch {b} (the engine fell back to batch {up.batch}, tile {up.tile})"
        up.batch, up.tile = b, 0
        return {"model_fps": None, "model_reason": reason}
    return {
        "model_fps": b / t.median_s,
        "model_ms_per_frame": 1e3 * t.median_s / b,
        "model_times_s": list(t.times_s),
    }


def _e2e(
    up: Upscaler, clip: dict[str, Any], dec: str, enc: dict[str, Any], opts: PipelineOptions, work: Path
) -> dict[str, Any]:
    batch = up.batch
    dst = work / "out.mkv" if opts.output == "file" else None
    encode = EncodeOptions(codec=enc["codec"], preset=enc["preset"], container_format="matroska")
    try:
        stats = upscale_video(
            clip["path"],
            None if dst is None else str(dst),
            up,
            encode,
            hwaccel="nvdec" if dec == "nvdec" else "none",
            overwrite=True,
        )
        up_batch, up_tile = up.batch, up.tile
    except UserError as e:  # e.g. NVDEC cannot decode this codec: a reason, not a crash
        return {"status": "skipped", "reason": str(e)}
    except Exception as e:  # keep the other runs of a long GPU session; the message says what broke
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    finally:
        up.batch, up.tile = batch, 0  # undo the out-of-memory ladder for the next run
        if dst is not None:
            dst.unlink(missing_ok=True)
    return {
        "status": "ok",
        "reason": None,
        "decoder": stats.decoder,
        "codec": stats.codec,
        "audio_copied": dst is not None and bool(clip.get("audio")),
        "out_size": [stats.out_size[1], stats.out_size[0]],
        "encoded": stats.encoded,
        "elapsed_s": stats.elapsed,
        "fps": stats.encoded / stats.elapsed,
        "busy_s": dict(stats.busy),
        "stage_fps": {s: (None if math.isinf(v) else v) for s, v in stats.stage_fps().items()},
        "bottleneck": stats.slowest,
        "batch_used": up_batch,  # lower than asked when the out-of-memory ladder stepped in
        "tile_used": up_tile,
    }


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _one_line(r: dict[str, Any]) -> str:
    what = f"{r['clip']} {r['preset']} {r['backend']} {r['precision']} b{r['batch']} {r['decode']} {r['encoder']}"
    if r["status"] != "ok":
        return f"{what}: {r['status']}: {r['reason']}"
    return (
        f"{what}: {r['fps']:.3g} fps e2e, model-only {r['model_fps']:.3g} fps, bottleneck {r['bottleneck']}"
    )


def to_markdown(doc: dict[str, Any]) -> str:
    unused = [
        f"{k} ({v['reason']})"
        for k, v in {**doc["encoders"], **doc["decoders"]}.items()
        if not v["available"]
    ]
    head = ("Not run: " + "; ".join(unused) + "\n\n") if unused else ""
    rows = []
    for r in doc["runs"]:
        size = "" if "lr_size" not in r else "{}x{} → {}x{}".format(*r["lr_size"], *r["hr_size"])
        fps = r.get("stage_fps") or {}
        rows.append(
            [
                r.get("clip"),
                size,
                r["preset"],
                r["backend"],
                r["precision"],
                r.get("batch"),
                r.get("decoder", r.get("decode")),
                r.get("encoder"),
                r.get("encoded"),
                r.get("fps"),
                r.get("model_fps"),
                r.get("e2e_over_model"),
                *[fps.get(s) for s in STAGES],
                r.get("bottleneck"),
                r["reason"] if r["status"] != "ok" else ("audio copied" if r.get("audio_copied") else ""),
            ]
        )
    headers = ["clip", "input → output", "preset", "backend", "precision", "batch", "decoder", "encoder"]
    headers += ["frames", "e2e fps", "model fps", "e2e/model", "decode fps", "upscale fps", "encode fps"]
    headers += ["bottleneck", "note"]
    return (
        head
        + markdown_table(headers, rows)
        + (
            "\nStage fps = frames / that stage's busy seconds (stages run concurrently; the slowest sets"
            " the pace). Model fps: the model alone on the same Upscaler, size and batch, in the same run.\n"
        )
    )


# ----------------------------------------------------------------------------------------------- CLI
@click.command()
@click.option("--presets", default="tiny", callback=list_option(("paper", "small", "tiny")))
@click.option(
    "--backends", default="torch", callback=list_option(), help="Upscaler backends (torch, onnx, ...)."
)
@click.option("--precisions", default="auto", callback=list_option(("auto", "fp32", "fp16", "bf16")))
@click.option("--batches", default="4", callback=batches_option, help="Frames per network call, e.g. 4,8.")
@click.option(
    "--sizes", default="480x270,960x540", callback=sizes_option, help="Generated clips WxH, or 'none'."
)
@click.option("--frames", default=300, type=click.IntRange(1), help="Frames of each generated clip.")
@click.option(
    "--real", default=",".join(REAL_CLIPS), callback=list_option(none=True), help="Real clips, or 'none'."
)
@click.option("--max-frames", default=120, type=click.IntRange(1), help="Real clips are cut to this many.")
@click.option(
    "--encoders", default="auto", callback=list_option(), help="auto, or e.g. libx264:veryfast,libsvtav1:10."
)
@click.option("--decoders", default="auto", callback=list_option(("auto", "cpu", "nvdec")))
@click.option(
    "--output",
    default="file",
    type=click.Choice(["file", "null"]),
    help="Real file (audio copied) or null muxer.",
)
@click.option(
    "--repeats", default=5, type=click.IntRange(1), help="Timed calls of the model-only measurement."
)
@click.option("--warmup", default=2, type=click.IntRange(0))
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--max-seconds", default=300.0, type=click.FloatRange(0, min_open=True), help="Budget per run.")
@click.option("--threads", default=None, type=click.IntRange(1), help="torch CPU threads.")
@click.option("--videos-dir", default=SHARED / "videos", type=click.Path(path_type=Path))
@click.option("--results-dir", default=RESULTS, type=click.Path(path_type=Path))
def main(**kwargs: Any) -> None:
    """End-to-end fps of decode ‖ upscale ‖ encode, per stage, beside model-only fps."""
    opts = PipelineOptions(**kwargs)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration at info level
    try:
        run(opts)
    except UserError as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    main()
