"""Model-only throughput: frames/s and latency of each preset x backend x precision x batch x input size,
with the peers (Real-ESRGAN x4plus, realesr-animevideov3, bicubic) timed in the same run.

    python -m benchmarks.throughput --device cuda --presets tiny,small,paper --batches 1,4,8
    python -m benchmarks.throughput --device cpu --presets tiny --sizes 128x128,480x270 --batches 1

Every subject maps float32 RGB (B,3,h,w) in [0,1] on the device to float32 (B,3,4h,4w): ours through
`Upscaler.__call__` (what the pipeline calls, precision casts included), peers and bicubic with the
same casts. Achieved TFLOP/s = 2 x MACs / time, beside an n x n matmul timed in the same run and dtype.
Cases that cannot fit (estimated on meta tensors) or cannot finish within --max-seconds (estimated from
MACs and the measured matmul peak, then from the first call) are skipped with the reason recorded.
Writes benchmarks/results/throughput_<device>_<date>.{json,md,png}.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import click
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from gtasr_stream.cli import keep_freed_memory
from gtasr_stream.engines.device import is_oom, resolve_device, resolve_dtype
from gtasr_stream.engines.upscaler import Upscaler
from gtasr_stream.errors import UserError
from gtasr_stream.model import SCALE, ConsistencyModel, build_network, sample_one_step
from gtasr_stream.model.network import count_macs
from training.peers import PEER_FILES, PeerName, load_peer

from .common import (
    RESULTS,
    SHARED,
    TooSlow,
    batches_option,
    default_memory_limit,
    dtype_name,
    environment,
    fresh_input,
    list_option,
    markdown_table,
    matmul_peak,
    peak_bytes,
    result_stem,
    sizes_option,
    synchronizer,
    time_calls,
    write_json,
    write_text,
)
from .plot import plot

PRESET_NAMES = ("paper", "small", "tiny")
PEER_NAMES = ("bicubic", *PEER_FILES)
DEFAULT_SIZES = "128x128,480x270,960x540,1920x1080"
REFERENCE_PEER = "realesr_animevideov3"  # the fastest learned peer: the one to beat at equal input size
# torch.compile modes (reduce-overhead: CUDA graphs); 'eager' traces with dynamo only (a quick CPU check)
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "eager")


@dataclass(frozen=True)
class ThroughputOptions:
    """What one `python -m benchmarks.throughput` run measures."""

    presets: tuple[str, ...]  # our network presets (random weights: speed does not depend on values)
    backends: tuple[str, ...]  # Upscaler backends; one that cannot be built is recorded 'unavailable'
    precisions: tuple[str, ...]  # fp32 | fp16 | bf16 | auto (fp16 on CUDA; bf16 on CPUs with it native)
    batches: tuple[int, ...]  # frames per network call
    sizes: tuple[tuple[int, int], ...]  # LR input (width, height); outputs are 4x
    peers: tuple[str, ...]  # bicubic and peer networks, timed with PyTorch eager on every precision
    repeats: int  # timed calls per case; the median is reported
    warmup: int  # untimed calls before them (allocator, cuDNN autotuning, lazy init)
    device: str  # auto | cpu | cuda | cuda:N
    max_seconds: float  # per case: skip when warm-up + repeats would take longer
    max_memory_gb: (
        float | None
    )  # per case: skip above this estimated peak (None: half the free RAM / the GPU)
    peak_size: int | None  # n of the n x n x n matmul peak (None: 8192 on CUDA, 2048 on CPU)
    threads: int | None  # torch CPU threads (None: torch's default)
    weights_dir: Path  # peers' safetensors (../shared/data/weights)
    results_dir: Path  # where the JSON, markdown table and plot go
    plot: bool  # write the PNG
    compile: str = "none"  # our presets' step through torch.compile: a COMPILE_MODES name, or none


class _OutOfMemory(Exception):
    """The Upscaler hit its out-of-memory ladder: the case does not fit at this batch."""


@dataclass
class Subject:
    """One thing to time: float32 (B,3,h,w) in [0,1] on the device -> float32 (B,3,4h,4w)."""

    model: str  # preset name, peer name or 'bicubic'
    kind: str  # 'gtasr' | 'peer' | 'baseline'
    backend: str
    precision: str  # resolved: fp32 | fp16 | bf16
    run: Callable[[Tensor], Tensor]
    macs: Callable[[int, int], int | None]  # MACs of one frame at LR (h, w); None: not counted
    memory: Callable[[int, int, int], int]  # estimated peak bytes of a call at (B, h, w)
    setup_s: float  # construction time (export/compile included), not part of any timing
    reset: Callable[[], None] = lambda: None  # undo what a failed case changed (the OOM ladder)
    notes: list[str] = field(default_factory=list)  # warnings the engine gave
    prime: Callable[[Tensor], object] | None = None  # an untimed first call per shape (compiling)


# ------------------------------------------------------------------------------------------ subjects
def _meta_empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    return torch.empty(shape, device="meta", dtype=dtype)


def _io_bytes(b: int, h: int, w: int) -> int:
    """Input and float32 output of a call, plus the output's cast and concatenation copies."""
    return 4 * b * 3 * h * w + 3 * 4 * b * 3 * SCALE * SCALE * h * w


def gtasr_subject(
    preset: str, backend: str, precision: str, device: torch.device, max_batch: int, compile: str = "none"
) -> Subject | str:
    """Our preset through Upscaler (random weights), or the reason it cannot be built; with `compile`,
    the Upscaler's step goes through torch.compile (compiled at each new shape, untimed)."""
    t0 = time.perf_counter()
    net = build_network(preset)
    meta_net = copy.deepcopy(net).to("meta")
    notes: list[str] = []

    def on_warning(msg: str) -> None:
        if msg.startswith("out of GPU memory"):
            raise _OutOfMemory(msg)
        notes.append(msg)

    try:
        up = Upscaler(
            model=ConsistencyModel(net),
            device=str(device),
            precision=cast(Any, precision),
            batch=max_batch,
            backend=cast(Any, backend),
            noise="fixed",
            on_warning=on_warning,
        )
    except (UserError, ValueError, ImportError) as e:
        return f"not available: {e}"
    meta_model = ConsistencyModel(meta_net).to(up.dtype)
    m = meta_model.multiple
    macs_cache: dict[tuple[int, int], int] = {}

    def macs(h: int, w: int) -> int:  # of the padded frame the network really runs on
        hw = (math.ceil(h / m) * m, math.ceil(w / m) * m)
        if hw not in macs_cache:
            macs_cache[hw] = count_macs(meta_net, hw)
        return macs_cache[hw]

    def memory(b: int, h: int, w: int) -> int:
        lq = _meta_empty((b, 3, h, w), up.dtype)
        eps = _meta_empty((1, 3, SCALE * h, SCALE * w), up.dtype)
        return peak_bytes(lambda: sample_one_step(meta_model, lq, eps)) + _io_bytes(b, h, w)

    def reset() -> None:
        up.batch, up.tile = max_batch, 0

    label, prime = up.backend, None
    if compile != "none":
        kw: dict[str, Any] = {"backend": "eager"} if compile == "eager" else {"mode": compile}
        up.step = torch.compile(up.step, **kw)
        label, prime = f"{up.backend}+compile:{compile}", up
    return Subject(
        preset,
        "gtasr",
        label,
        dtype_name(up.dtype),
        up,
        macs,
        memory,
        time.perf_counter() - t0,
        reset,
        notes,
        prime,
    )


def peer_subject(name: str, precision: str, device: torch.device, weights_dir: Path) -> Subject | str:
    """A peer network or bicubic, PyTorch eager, same casts and memory format as Upscaler."""
    t0 = time.perf_counter()
    dtype = resolve_dtype(cast(Any, precision), device)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    if name == "bicubic":

        @torch.inference_mode()
        def bicubic(x: Tensor) -> Tensor:
            y = F.interpolate(x.to(dtype), scale_factor=SCALE, mode="bicubic", align_corners=False)
            return y.clamp_(0, 1).float()

        def bicubic_memory(b: int, h: int, w: int) -> int:
            return _io_bytes(b, h, w) * 2

        return Subject(
            name, "baseline", "torch", dtype_name(dtype), bicubic, lambda h, w: None, bicubic_memory, 0.0
        )
    if name not in PEER_FILES:
        raise ValueError(f"unknown peer '{name}'; expected one of {', '.join(PEER_NAMES)}")
    try:
        net = load_peer(cast(PeerName, name), weights_dir)
    except FileNotFoundError as e:
        return f"not available: {e}"
    meta_net = copy.deepcopy(net).to("meta", dtype)
    net = net.to(device, dtype).to(memory_format=fmt)  # type: ignore[call-overload]

    @torch.inference_mode()
    def run(x: Tensor) -> Tensor:
        return net(x.to(dtype).contiguous(memory_format=fmt)).float()

    def macs(h: int, w: int) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            meta_net(_meta_empty((1, 3, h, w), dtype))
        return counter.get_total_flops() // 2

    def memory(b: int, h: int, w: int) -> int:
        return peak_bytes(lambda: meta_net(_meta_empty((b, 3, h, w), dtype))) + _io_bytes(b, h, w)

    return Subject(name, "peer", "torch", dtype_name(dtype), run, macs, memory, time.perf_counter() - t0)


def subjects(opts: ThroughputOptions, device: torch.device) -> Iterator[tuple[dict[str, Any], Subject | str]]:
    """(identity, subject or reason) for every peer and preset x backend, one precision at a time.

    Built lazily, so that only one subject holds device memory at a time.
    """
    for precision in opts.precisions:
        prec = dtype_name(resolve_dtype(cast(Any, precision), device))
        for peer in opts.peers:
            kind = "baseline" if peer == "bicubic" else "peer"
            ident = {"model": peer, "kind": kind, "backend": "torch", "precision": prec}
            yield ident, peer_subject(peer, precision, device, opts.weights_dir)
        for preset in opts.presets:
            for backend in opts.backends:
                ident = {"model": preset, "kind": "gtasr", "backend": backend, "precision": prec}
                subject = gtasr_subject(preset, backend, precision, device, max(opts.batches), opts.compile)
                yield ident, subject


# ------------------------------------------------------------------------------------------ one case
def time_case(
    s: Subject,
    b: int,
    size: tuple[int, int],
    opts: ThroughputOptions,
    device: torch.device,
    peak_tflops: float | None,
    memory_limit: float,
) -> dict[str, Any]:
    """Time `s` on batches of b frames of LR size (w, h); a record with status ok | skipped | failed."""
    w, h = size
    rec: dict[str, Any] = {"status": "skipped", "reason": None}
    est = s.memory(b, h, w)
    rec["est_memory_gb"] = est / 1e9
    macs = s.macs(h, w)
    rec["gmac_per_frame"] = None if macs is None else macs / 1e9
    if est > memory_limit:
        rec["reason"] = f"estimated peak memory {est / 1e9:.3g} GB > limit {memory_limit / 1e9:.3g} GB"
        return rec
    calls = opts.warmup + opts.repeats
    if macs and peak_tflops:
        floor_s = 2 * macs * b / (peak_tflops * 1e12)  # at the measured matmul peak: no call is faster
        if floor_s * calls > opts.max_seconds:
            rec["reason"] = (
                f"estimated >= {floor_s:.3g} s a call (2 x MACs / measured matmul peak), so {calls} calls"
                f" would exceed --max-seconds {opts.max_seconds:g}"
            )
            return rec
    try:
        if s.prime is not None:  # compile for this shape before the clock runs; say how long it took
            t0 = time.perf_counter()
            s.prime(fresh_input((b, 3, h, w), torch.float32, device, seed=999))
            synchronizer(device)()
            rec["compile_s"] = time.perf_counter() - t0
        t = time_calls(
            s.run,
            lambda i: fresh_input((b, 3, h, w), torch.float32, device, seed=1000 + i),
            warmup=opts.warmup,
            repeats=opts.repeats,
            sync=synchronizer(device),
            max_seconds=opts.max_seconds,
        )
    except TooSlow as e:
        rec["reason"] = str(e)
        return rec
    except _OutOfMemory as e:
        rec["reason"] = f"out of memory at batch {b} ({e})"
        return rec
    except Exception as e:
        if is_oom(e):
            rec["reason"] = f"out of memory at batch {b}"
        else:
            rec["status"], rec["reason"] = "failed", f"{type(e).__name__}: {e}"
        return rec
    finally:
        s.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rec.update(
        status="ok",
        times_s=list(t.times_s),
        median_s=t.median_s,
        min_s=t.min_s,
        latency_ms=1e3 * t.median_s,
        ms_per_frame=1e3 * t.median_s / b,
        fps=b / t.median_s,
    )
    if macs:
        rec["tflops"] = 2 * macs * b / t.median_s / 1e12
        rec["peak_fraction"] = rec["tflops"] / peak_tflops if peak_tflops else None
    return rec


def add_ratios(cases: list[dict[str, Any]]) -> None:
    """fps over bicubic's and over realesr-animevideov3's at the same size, batch and precision."""
    ok = [c for c in cases if c["status"] == "ok"]
    for c in ok:
        for ref, key in (("bicubic", "vs_bicubic"), (REFERENCE_PEER, "vs_animevideov3")):
            match = [
                r["fps"]
                for r in ok
                if r["model"] == ref
                and (r["lr_size"], r["batch"], r["precision"]) == (c["lr_size"], c["batch"], c["precision"])
            ]
            c[key] = c["fps"] / match[0] if match else None


# ----------------------------------------------------------------------------------------------- run
def run(opts: ThroughputOptions, module: str = "benchmarks.throughput") -> dict[str, Any]:
    """Measure every case; returns the result document (also written to opts.results_dir)."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = resolve_device(opts.device)
    env = environment(device, module)
    n = opts.peak_size or (8192 if device.type == "cuda" else 2048)
    peaks = {}
    # On the CPU both fp32 and bf16 peaks, whatever runs: the bf16 one is the ceiling of the default
    # there, the fp32 one of --fp32 and the peers, and their ratio says how native bf16 is.
    wanted = [*opts.precisions, *(("fp32", "bf16") if device.type == "cpu" else ())]
    for precision in wanted:
        dtype = resolve_dtype(cast(Any, precision), device)
        if dtype_name(dtype) not in peaks:
            peaks[dtype_name(dtype)] = matmul_peak(device, dtype, n)
            _say(f"matmul peak {dtype_name(dtype)} n={n}: {peaks[dtype_name(dtype)]['tflops']} TFLOP/s")
    limit = opts.max_memory_gb * 1e9 if opts.max_memory_gb else default_memory_limit(device)
    cases: list[dict[str, Any]] = []
    for ident, s in subjects(opts, device):
        if isinstance(s, str):
            cases.append({**ident, "status": "unavailable", "reason": s, "lr_size": None, "batch": None})
            _say(f"{ident['model']} {ident['backend']} {ident['precision']}: {s}")
            continue
        # what really ran: a compiled backend keeps fp32 under auto on the CPU
        ident = {**ident, "backend": s.backend, "precision": s.precision, "setup_s": s.setup_s}
        for w, h in opts.sizes:
            for b in opts.batches:
                rec = {**ident, "lr_size": [w, h], "hr_size": [SCALE * w, SCALE * h], "batch": b}
                rec.update(time_case(s, b, (w, h), opts, device, peaks[s.precision]["tflops"], limit))
                if rec.get("tflops"):  # against every measured peak (CPU: fp32 and bf16)
                    rec["peak_fraction_by_dtype"] = {
                        k: rec["tflops"] / v["tflops"] for k, v in peaks.items() if v["tflops"]
                    }
                rec["notes"] = list(s.notes)
                cases.append(rec)
                _say(_one_line(rec))
        del s
        if device.type == "cuda":
            torch.cuda.empty_cache()
    add_ratios(cases)
    doc: dict[str, Any] = {
        "benchmark": "throughput",
        "schema": 1,
        "env": env,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "matmul_peak": peaks,
        "memory_limit_gb": limit / 1e9,
        "cases": cases,
    }
    stem = opts.results_dir / result_stem("throughput", env)
    table = f"Model-only throughput on {env['device_name']} ({env['date']})\n\n" + to_markdown(doc)
    doc["files"] = {
        "json": f"{stem.name}.json",
        "markdown": f"{stem.name}.md",
        "plot": None,
    }  # beside this file
    if opts.plot and plot(doc, Path(f"{stem}.png")):
        doc["files"]["plot"] = f"{stem.name}.png"
    write_text(Path(f"{stem}.md"), table)
    write_json(Path(f"{stem}.json"), doc)
    print(table)
    print(f"wrote {stem}.json, .md" + (", .png" if doc["files"]["plot"] else ""))
    return doc


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _one_line(c: dict[str, Any]) -> str:
    w, h = c["lr_size"]
    what = f"{c['model']} {c['backend']} {c['precision']} b{c['batch']} {w}x{h}"
    if c["status"] != "ok":
        return f"{what}: {c['status']}: {c['reason']}"
    return f"{what}: {c['fps']:.3g} fps, {c['latency_ms']:.3g} ms a call"


def to_markdown(doc: dict[str, Any]) -> str:
    """One row per case; peaks first. Skipped and unavailable cases show their reason."""
    peaks = ", ".join(
        f"{k}: {v['tflops']:.3g} TFLOP/s" if v["tflops"] else f"{k}: {v['reason']}"
        for k, v in doc["matmul_peak"].items()
    )
    head = f"Measured matmul peak ({next(iter(doc['matmul_peak'].values()))['n']}³): {peaks}\n\n"
    extra = [k for k in ("fp32", "bf16") if k in doc["matmul_peak"]] if len(doc["matmul_peak"]) > 1 else []
    rows = []
    for c in doc["cases"]:
        size = "" if c["lr_size"] is None else "{}x{} → {}x{}".format(*c["lr_size"], *c["hr_size"])
        pct = c.get("peak_fraction")
        by = c.get("peak_fraction_by_dtype") or {}
        rows.append(
            [
                c["model"],
                c["backend"],
                c["precision"],
                c["batch"],
                size,
                c.get("fps"),
                c.get("ms_per_frame"),
                c.get("latency_ms"),
                c.get("tflops"),
                None if pct is None else 100 * pct,
                *(None if k not in by else 100 * by[k] for k in extra),
                c.get("vs_bicubic"),
                c.get("vs_animevideov3"),
                c["reason"] if c["status"] != "ok" else "",
            ]
        )
    headers = [
        "model",
        "backend",
        "precision",
        "batch",
        "input → output",
        "fps",
        "ms/frame",
        "ms/call",
        "TFLOP/s",
        "% of peak",
        *(f"% of {k} peak" for k in extra),
        "× bicubic",
        "× animevideov3",
        "note",
    ]
    return head + markdown_table(headers, rows)


# ----------------------------------------------------------------------------------------------- CLI
@click.command()
@click.option(
    "--presets", default=",".join(PRESET_NAMES), callback=list_option(PRESET_NAMES), help="Our presets."
)
@click.option(
    "--backends", default="torch", callback=list_option(), help="Upscaler backends (torch, onnx, ...)."
)
@click.option("--precisions", default="auto", callback=list_option(("auto", "fp32", "fp16", "bf16")))
@click.option("--batches", default="1,4,8", callback=batches_option, help="Frames per call, e.g. 1,4,8.")
@click.option("--sizes", default=DEFAULT_SIZES, callback=sizes_option, help="LR inputs WxH, comma-separated.")
@click.option(
    "--peers",
    default="bicubic,realesr_animevideov3,realesrgan_x4plus",
    callback=list_option(PEER_NAMES, none=True),
    help="Peers timed beside ours, or 'none'.",
)
@click.option("--repeats", default=5, type=click.IntRange(1), help="Timed calls per case (median).")
@click.option("--warmup", default=2, type=click.IntRange(0), help="Untimed calls before them.")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--max-seconds", default=120.0, type=click.FloatRange(0, min_open=True), help="Budget per case."
)
@click.option("--max-memory-gb", default=None, type=click.FloatRange(0, min_open=True))
@click.option("--peak-size", default=None, type=click.IntRange(16), help="n of the matmul peak.")
@click.option("--threads", default=None, type=click.IntRange(1), help="torch CPU threads.")
@click.option("--weights-dir", default=SHARED / "weights", type=click.Path(path_type=Path))
@click.option("--results-dir", default=RESULTS, type=click.Path(path_type=Path))
@click.option("--plot/--no-plot", default=True)
@click.option(
    "--compile", default="none", type=click.Choice(COMPILE_MODES), help="torch.compile our presets."
)
def main(**kwargs: Any) -> None:
    """Model-only fps and latency of our presets and the peers, side by side."""
    opts = ThroughputOptions(**kwargs)
    # the process's allocator as gtasr-stream's CLI sets it (every subject of the run shares it):
    # without it each CPU call page-faults its frame-sized blocks in afresh (NOTES.md "CPU")
    keep_freed_memory()
    try:
        run(opts)
    except UserError as e:
        raise click.ClickException(str(e)) from None


if __name__ == "__main__":
    main()
