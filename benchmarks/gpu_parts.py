"""The parts of `benchmarks.gpu_check`, each run in its own subprocess, and the two plans (the device's
and --dry-run's) that size them.

Every part takes the plan and a context (device, work folder, peer weights) and returns a JSON-able
document; measuring is left to the benchmark modules (`throughput.run`, `pipeline.run`,
`common.time_calls`), so the numbers mean what they mean there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import torch

from gtasr_stream.engines.device import resolve_device
from gtasr_stream.engines.upscaler import Upscaler
from gtasr_stream.model import ConsistencyModel, build_network
from gtasr_stream.pipeline import upscale_video
from gtasr_stream.preview.source import Captured
from gtasr_stream.preview.upscale import to_rgb
from gtasr_stream.video.color import YUVLayout, rgb_to_yuv
from gtasr_stream.video.reader import configure_decoder, open_input, pick_video_stream
from gtasr_stream.video.writer import EncodeOptions

from . import pipeline, throughput
from .clips import make_clip
from .common import REPO, SHARED, environment, fresh_input, parse_list, parse_sizes, synchronizer, time_calls

MODULE = "benchmarks.gpu_check"
NVENC = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")


@dataclass(frozen=True)
class Plan:
    """What each part measures and how long it may take (seconds, per part and in all)."""

    dry_run: bool
    device: str  # auto on the GPU machine; cpu in --dry-run
    precision: str  # fp16 on the GPU (the targets' condition); auto (fp32) on the CPU
    sizes: str  # model-only LR sizes
    batches: str
    presets: str  # eager presets besides paper, timed with the peers
    peers: str
    paper_sizes: str
    repeats: int
    warmup: int
    case_seconds: float  # per model-only case: the benchmarks' --max-seconds
    peak_size: int  # n of the matmul peak
    e2e_sizes: str  # generated clips, LR; the first is the 4K target, the second the 1080p one
    e2e_batch: int
    frames: int
    encoders: str
    run_seconds: float  # per end-to-end run
    compile_mode: str  # torch.compile mode of the compile part (reduce-overhead: CUDA graphs)
    compile_sizes: str  # the compile and aoti parts' LR sizes, at e2e_batch
    preview_size: str  # the preview's capture size
    profile_frames: int  # frames of the profiled end-to-end run at the first e2e size
    budget: float  # all parts together
    limits: dict[str, float] = field(default_factory=dict)  # each part's own limit


# Part order is priority order: what the summary needs first, what may not finish last.
# End to end is two parts, one per size: a part over its limit loses everything it measured.
PARTS = (
    "env",
    "tests",
    "throughput",
    "e2e_4k",
    "e2e_1080p",
    "paper",
    "preview",
    "profile",
    "convert",
    "compile",
    "aoti",
)
E2E_PARTS = ("e2e_4k", "e2e_1080p")  # the first and second of Plan.e2e_sizes

DEVICE_PLAN = Plan(
    dry_run=False,
    device="auto",
    precision="fp16",
    sizes="128x128,480x270,960x540,1920x1080",
    batches="1,8",
    presets="tiny,small",
    peers="bicubic,realesr_animevideov3,span_x4,realesrgan_x4plus",
    paper_sizes="128x128,480x270,960x540,1920x1080",
    repeats=5,
    warmup=2,
    case_seconds=6.0,
    peak_size=8192,
    e2e_sizes="960x540,480x270",
    e2e_batch=8,
    frames=240,
    encoders="libx264:ultrafast,libsvtav1:12,libx264:veryfast,h264_nvenc,hevc_nvenc",
    run_seconds=30.0,
    compile_mode="reduce-overhead",
    compile_sizes="480x270,960x540",
    preview_size="640x480",
    profile_frames=64,
    budget=420.0,
    limits={
        "env": 20,
        "tests": 45,
        "throughput": 70,
        "e2e_4k": 75,
        "e2e_1080p": 40,
        "paper": 30,
        "preview": 15,
        "profile": 35,
        "convert": 25,
        "compile": 45,
        "aoti": 45,  # what the budget leaves: a re-run can give it more (NOTES.md)
    },
)

# Every part on tiny sizes on the CPU: that the script runs and its results reach the summary (the
# model-only sizes are the first end-to-end size, as on the device).  aoti's limit is far below a CPU
# compile (minutes), so the dry run also walks the time-limit path; so does paper, mostly (its 171 M
# random parameters take seconds to build; it is the throughput part's code with another preset).
DRY_PLAN = Plan(
    dry_run=True,
    device="cpu",
    precision="auto",
    sizes="64x48",
    batches="1,2",
    presets="tiny",
    peers="bicubic,realesr_animevideov3",
    paper_sizes="64x64",
    repeats=1,
    warmup=0,
    case_seconds=60.0,  # generous: on a loaded CPU the guards would skip cases the summary needs
    peak_size=256,
    e2e_sizes="64x48,32x32",
    e2e_batch=2,
    frames=4,
    encoders="libx264:ultrafast,libsvtav1:12,h264_nvenc",
    run_seconds=120.0,
    compile_mode="eager",
    compile_sizes="64x48",
    preview_size="64x48",
    profile_frames=4,
    budget=1200.0,
    limits={  # generous (a loaded CI machine must not turn a part into "skipped"), but aoti and paper
        "env": 120,
        "tests": 120,
        "throughput": 120,
        "e2e_4k": 120,
        "e2e_1080p": 120,
        "paper": 4,
        "preview": 120,
        "profile": 120,
        "convert": 120,
        "compile": 120,
        "aoti": 4,
    },
)


@dataclass(frozen=True)
class Context:
    work: Path  # this run's scratch folder (the parts' result documents)
    weights_dir: Path  # peers' safetensors


def default_weights_dir() -> Path:
    """.gpu/weights when prepared (it travels to the device), else ../shared/data/weights."""
    carried = REPO / ".gpu" / "weights"
    return carried if carried.is_dir() else SHARED / "weights"


# ------------------------------------------------------------------------------------------- parts
def part_env(plan: Plan, ctx: Context) -> dict[str, Any]:
    """Device, driver, versions, and whether NVENC encoders and NVDEC decoding open."""
    device = resolve_device(plan.device)
    cuda = device.type == "cuda"
    doc: dict[str, Any] = {
        "env": environment(device, MODULE),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "av": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
        "cpu_count": os.cpu_count(),
    }
    if cuda:
        p = torch.cuda.get_device_properties(device)
        doc["gpu"] = {
            "name": p.name,
            "capability": f"{p.major}.{p.minor}",
            "memory_gb": p.total_memory / 1e9,
            "multiprocessors": p.multi_processor_count,
        }
    doc["nvenc"] = {name: pipeline.encoder_problem(name, cuda) or "opens" for name in NVENC}
    doc["nvdec"] = _nvdec(device, ctx.work) if cuda else "skipped: no CUDA device"
    return doc


def _nvdec(device: torch.device, work: Path) -> str:
    """'opens (decoder)' when NVDEC decodes a generated H.264 clip, else why not."""
    clip = make_clip(work / "nvdec_probe.mp4", 256, 144, 4)
    try:
        container = open_input(str(clip), "nvdec", device.index or 0)
    except Exception as e:
        return f"does not open: {e}"
    try:
        stream = pick_video_stream(container, str(clip))
        name = configure_decoder(stream)
        n = sum(1 for _ in container.decode(stream))
        return f"opens ({name}, {n} frames decoded)"
    except Exception as e:
        return f"fails to decode: {type(e).__name__}: {e}"
    finally:
        container.close()


def part_tests(plan: Plan, ctx: Context) -> dict[str, Any]:
    """pytest -m gpu over the test files that have gpu-marked tests; counts from its JUnit XML."""
    files = sorted(str(p) for p in (REPO / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())
    xml = ctx.work / "tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run([*cmd, f"--junitxml={xml}", *files], cwd=REPO, check=False)
    if not xml.is_file():
        return {"exit_code": done.returncode, "reason": "pytest wrote no report"}
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            failed.append(f"{case.get('classname')}::{case.get('name')}: {(bad.get('message') or '')[:300]}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"exit_code": done.returncode, "files": files, "passed": passed, **counts, "failed": failed}


def _throughput(plan: Plan, ctx: Context, name: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        presets=tuple(parse_list(plan.presets)),
        backends=("torch",),
        precisions=(plan.precision,),
        batches=tuple(int(b) for b in parse_list(plan.batches)),
        sizes=parse_sizes(plan.sizes),
        peers=tuple(parse_list(plan.peers)),
        repeats=plan.repeats,
        warmup=plan.warmup,
        device=plan.device,
        max_seconds=plan.case_seconds,
        max_memory_gb=None,
        peak_size=plan.peak_size,
        threads=None,
        weights_dir=ctx.weights_dir,
        results_dir=ctx.work / name,
        plot=False,
    )
    doc = throughput.run(throughput.ThroughputOptions(**{**base, **kw}), module=MODULE)
    return {"throughput": doc}


def part_throughput(plan: Plan, ctx: Context) -> dict[str, Any]:
    """Model only, eager: the peers and our real-time presets at every size and batch."""
    return _throughput(plan, ctx, "throughput")


def part_paper(plan: Plan, ctx: Context) -> dict[str, Any]:
    """Model only, eager: the paper preset (its 128x128 batch-8 figure is a target)."""
    return _throughput(plan, ctx, "paper", presets=("paper",), peers=(), sizes=parse_sizes(plan.paper_sizes))


def part_compile(plan: Plan, ctx: Context) -> dict[str, Any]:
    """Model only, tiny through torch.compile (with CUDA graphs on the device) at the target sizes."""
    sizes, b = parse_sizes(plan.compile_sizes), (plan.e2e_batch,)
    return _throughput(
        plan, ctx, "compile", presets=("tiny",), peers=(), sizes=sizes, batches=b, compile=plan.compile_mode
    )


def part_aoti(plan: Plan, ctx: Context) -> dict[str, Any]:
    """Model only, tiny as an AOTInductor package (its compile is the subject's setup_s)."""
    sizes, b = parse_sizes(plan.compile_sizes), (plan.e2e_batch,)
    return _throughput(
        plan, ctx, "aoti", presets=("tiny",), backends=("aoti",), peers=(), sizes=sizes, batches=b
    )


def _e2e(plan: Plan, ctx: Context, index: int) -> dict[str, Any]:
    """End to end on a generated clip with audio (written to a real file, audio copied): CPU and
    NVDEC decoding, every encoder of the plan that opens here."""
    opts = pipeline.PipelineOptions(
        presets=("tiny",),
        backends=("torch",),
        precisions=(plan.precision,),
        batches=(plan.e2e_batch,),
        sizes=parse_sizes(plan.e2e_sizes)[index : index + 1],
        frames=plan.frames,
        real=(),
        max_frames=1,
        encoders=tuple(parse_list(plan.encoders)),
        decoders=("auto",),
        output="file",
        repeats=plan.repeats,
        warmup=plan.warmup,
        device=plan.device,
        max_seconds=plan.run_seconds,
        threads=None,
        videos_dir=SHARED / "videos",
        results_dir=ctx.work / E2E_PARTS[index],
    )
    return {"pipeline": pipeline.run(opts, module=MODULE)}


def part_e2e_4k(plan: Plan, ctx: Context) -> dict[str, Any]:
    return _e2e(plan, ctx, 0)


def part_e2e_1080p(plan: Plan, ctx: Context) -> dict[str, Any]:
    return _e2e(plan, ctx, 1)


def part_preview(plan: Plan, ctx: Context) -> dict[str, Any]:
    """The preview's model stage at its capture size, batch 1, the shipped model: planes -> RGB on
    the device -> 4x (what the preview reports as model time), and the network call alone."""
    [(w, h)] = parse_sizes(plan.preview_size)
    up = Upscaler(device=plan.device, precision=cast(Any, plan.precision), batch=1)
    layout = YUVLayout(8, 1, 1, "bt709", "limited")
    sync = synchronizer(up.device)

    def captured(i: int) -> Captured:
        g = np.random.default_rng(i)
        y = g.integers(16, 236, (h, w), dtype=np.uint8)
        u, v = (g.integers(16, 241, (h // 2, w // 2), dtype=np.uint8) for _ in range(2))
        return Captured((y, u, v), layout, 0.0, 0.0, cast(Any, None))

    stage = time_calls(
        lambda c: up(to_rgb(c, up.device)), captured, warmup=plan.warmup, repeats=plan.repeats, sync=sync
    )
    model = time_calls(
        up,
        lambda i: fresh_input((1, 3, h, w), torch.float32, up.device, seed=i),
        warmup=plan.warmup,
        repeats=plan.repeats,
        sync=sync,
    )
    return {
        "size": [w, h],
        "device": str(up.device),
        "precision": str(up.dtype).removeprefix("torch."),
        "model": up.meta.get("preset") or up.meta.get("name"),
        "stage_ms": 1e3 * stage.median_s,
        "stage_times_s": list(stage.times_s),
        "model_ms": 1e3 * model.median_s,
        "model_times_s": list(model.times_s),
    }


def part_profile(plan: Plan, ctx: Context) -> dict[str, Any]:
    """Where the end-to-end time goes at the 4K target: torch.profiler over one pipeline run of tiny
    on a generated clip (after an unprofiled warm-up run), top ops by device and by host time."""
    from torch.profiler import ProfilerActivity, profile

    device = resolve_device(plan.device)
    w, h = parse_sizes(plan.e2e_sizes)[0]
    clip = make_clip(ctx.work / "profile.mp4", w, h, plan.profile_frames)
    net = ConsistencyModel(build_network("tiny"))
    up = Upscaler(
        net, device=str(device), precision=cast(Any, plan.precision), batch=plan.e2e_batch, noise="fixed"
    )
    codec, _, preset = parse_list(plan.encoders)[0].partition(":")
    encode = EncodeOptions(codec=codec, preset=preset or None, container_format="matroska")
    upscale_video(str(clip), None, up, encode)  # warm-up: cuDNN's algorithm search, allocator, encoder
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:  # the pipeline's torch work runs in its upscale thread, which the profiler skips by default
        config = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    except TypeError:  # a torch without the option: the device's kernels are still recorded
        config = None
    with profile(activities=activities, experimental_config=config) as prof:
        stats = upscale_video(str(clip), None, up, encode)
    table = prof.key_averages()
    return {
        "clip": [w, h],
        "frames": stats.encoded,
        "encoder": plan.encoders.split(",")[0],
        "fps": stats.encoded / stats.elapsed,
        "busy_s": dict(stats.busy),
        "bottleneck": stats.slowest,
        "top_device": table.table(sort_by="self_device_time_total", row_limit=25)
        if device.type == "cuda"
        else None,
        "top_host": table.table(sort_by="self_cpu_time_total", row_limit=25),
    }


def part_convert(plan: Plan, ctx: Context) -> dict[str, Any]:
    """NOTES.md candidate 3, measured before it is written: the network's [-1, 1] output to YUV
    planes as the pipeline does it (Upscaler's float32 [0, 1], then rgb_to_yuv: many full-size
    passes) in eager, and the same function through torch.compile (fused), at the first e2e size
    and batch, with the largest difference in code values between the two."""
    device = resolve_device(plan.device)
    w, h = parse_sizes(plan.e2e_sizes)[0]
    b = plan.e2e_batch
    layout = YUVLayout(8, 1, 1, "bt709", "limited")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    sync = synchronizer(device)

    def finish(hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return rgb_to_yuv(hr.float().add(1).mul(0.5).clamp(0, 1), layout)

    def make(i: int) -> torch.Tensor:
        return fresh_input((b, 3, 4 * h, 4 * w), dtype, device, seed=i) * 2 - 1

    fused = torch.compile(finish, backend="eager" if plan.compile_mode == "eager" else "inductor")
    eager = time_calls(finish, make, warmup=plan.warmup, repeats=plan.repeats, sync=sync)
    t0 = time.perf_counter()
    fused(make(0))
    sync()
    compile_s = time.perf_counter() - t0
    compiled = time_calls(fused, make, warmup=plan.warmup, repeats=plan.repeats, sync=sync)
    x = make(99)
    diff = max(int((a.int() - c.int()).abs().max()) for a, c in zip(finish(x), fused(x), strict=True))
    return {
        "hr_size": [4 * w, 4 * h],
        "batch": b,
        "eager_ms_per_frame": 1e3 * eager.median_s / b,
        "compiled_ms_per_frame": 1e3 * compiled.median_s / b,
        "compile_s": compile_s,
        "max_code_value_difference": diff,
    }


PART_FUNCTIONS = {
    "env": part_env,
    "tests": part_tests,
    "throughput": part_throughput,
    "e2e_4k": part_e2e_4k,
    "e2e_1080p": part_e2e_1080p,
    "paper": part_paper,
    "preview": part_preview,
    "profile": part_profile,
    "convert": part_convert,
    "compile": part_compile,
    "aoti": part_aoti,
}
