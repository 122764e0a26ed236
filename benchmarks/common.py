"""What the throughput and pipeline benchmarks share: the timing loop, guards against hopeless cases,
the machine's description, the matmul peak, and writing results.

Timing follows one rule everywhere: make the input first, synchronise, start the clock, run,
synchronise, stop the clock; warm-up calls are not kept; the figure is the median of the rest.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from gtasr_stream.files import atomic_path

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"


class TooSlow(Exception):
    """A case that would run past its time budget; str(e) is the reason recorded in the results."""


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed call (warm-up calls excluded)."""

    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)


def time_calls(
    fn: Callable[[T], object],
    make_input: Callable[[int], T],
    *,
    warmup: int,
    repeats: int,
    sync: Callable[[], None],
    clock: Callable[[], float] = time.perf_counter,
    max_seconds: float | None = None,
) -> Timing:
    """Run fn on warmup + repeats fresh inputs; time the last `repeats` calls between sync() calls.

    make_input(i) builds call i's input before its clock starts (so generating it is not timed).
    With max_seconds, raises TooSlow after the first call when all the calls would take longer.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    times: list[float] = []
    for i in range(warmup + repeats):
        x = make_input(i)
        sync()  # nothing queued from before (input generation included) may land in this call's time
        t0 = clock()
        fn(x)
        sync()  # the device has finished the work, not only accepted it
        dt = clock() - t0
        if i == 0 and max_seconds is not None and dt * (warmup + repeats) > max_seconds:
            raise TooSlow(
                f"the first call took {dt:.3g} s, so {warmup + repeats} calls would exceed"
                f" --max-seconds {max_seconds:g}"
            )
        if i >= warmup:
            times.append(dt)
    return Timing(tuple(times))


def synchronizer(device: torch.device) -> Callable[[], None]:
    """torch.cuda.synchronize on CUDA; nothing on the CPU, whose torch ops return when done."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def fresh_input(
    shape: Sequence[int], dtype: torch.dtype, device: torch.device, seed: int
) -> torch.Tensor:  # float in [0.01, 0.99]: random and never all zero (zeros can take fast paths)
    g = torch.Generator(device=device).manual_seed(seed)
    return (torch.rand(tuple(shape), generator=g, device=device, dtype=torch.float32) * 0.98 + 0.01).to(dtype)


# ------------------------------------------------------------------------ guards against hopeless cases
class _PeakMemory(TorchDispatchMode):
    """Counts bytes of live tensors created by each aten op (views and in-place results excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        inputs = {id(a) for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in inputs:
                n = t.untyped_storage().nbytes()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
        return out

    def _free(self, n: int) -> None:
        self.live -= n


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of the tensors `fn` creates, for fn working on meta tensors (no memory, no compute).

    An estimate (the allocator's caching and fragmentation come on top); its use is to skip cases
    that cannot fit before they take the machine down, which a CPU out-of-memory kill would.
    """
    with torch.inference_mode(), _PeakMemory() as mode:
        fn()
    return mode.peak


def default_memory_limit(device: torch.device) -> float:
    """Bytes a case may be estimated to need: half the available RAM on CPU, the GPU's total on CUDA."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 2
    except OSError:
        pass
    return 8e9  # no /proc: a conservative guess for a machine we know nothing about


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> dict[str, Any]:
    """Measured n x n x n matmul TFLOP/s in `dtype` on `device`: the physical limit beside our figures."""
    a = fresh_input((n, n), dtype, device, seed=1)
    b = fresh_input((n, n), dtype, device, seed=2)
    try:
        t = time_calls(lambda _: a @ b, lambda i: i, warmup=2, repeats=repeats, sync=synchronizer(device))
    except RuntimeError as e:  # e.g. a dtype this device's matmul does not have
        return {"n": n, "dtype": dtype_name(dtype), "tflops": None, "reason": f"failed: {e}"}
    return {
        "n": n,
        "dtype": dtype_name(dtype),
        "median_s": t.median_s,
        "tflops": 2 * n**3 / t.median_s / 1e12,
        "reason": None,
    }


# ------------------------------------------------------------------------------ machine and versions
def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run_quiet(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, module: str) -> dict[str, Any]:
    """Everything needed to reproduce and to judge a result: machine, versions, load, date, command."""
    cuda = device.type == "cuda"
    git_head = _run_quiet(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    git_dirty = _run_quiet(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", module, *sys.argv[1:]]),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "driver": _run_quiet(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        if cuda
        else None,
        "cuda_runtime": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in ("torch", "av", "numpy", "onnxruntime", "gtasr-stream")},
        "git_commit": git_head,
        "git_dirty": None if git_head is None else bool(git_dirty),
    }


def device_slug(env: dict[str, Any]) -> str:
    """'nvidia-h100-80gb-hbm3' or 'cpu-2t': short, file-name safe, says which machine."""
    cuda = str(env["device"]).startswith("cuda")
    name = str(env["device_name"]) if cuda else f"cpu-{env['cpu_count']}t"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def result_stem(kind: str, env: dict[str, Any]) -> str:
    """'throughput_nvidia-h100-80gb-hbm3_2026-11-23T0412': benchmark, device, UTC date and minute."""
    stamp = datetime.datetime.fromisoformat(env["date"]).strftime("%Y-%m-%dT%H%M")
    return f"{kind}_{device_slug(env)}_{stamp}"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".partial.json") as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".partial.md") as tmp:
        tmp.write_text(text)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers right-aligned, None shown as an empty cell."""

    def cell(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v).replace("|", "/")

    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'128x128,480x270' -> ((128, 128), (480, 270)) as (width, height)."""
    sizes = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", part)
        if not m or int(m[1]) < 1 or int(m[2]) < 1:
            raise ValueError(f"'{part}' is not WIDTHxHEIGHT (e.g. 960x540)")
        sizes.append((int(m[1]), int(m[2])))
    return tuple(sizes)


def parse_list(text: str, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each checked against `allowed` when given."""
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise ValueError("empty list")
    for s in items:
        if allowed is not None and s not in allowed:
            raise ValueError(f"'{s}' is not one of {', '.join(allowed)}")
    return items


# ------------------------------------------------------------------- click converters for the two CLIs
def list_option(
    allowed: Sequence[str] | None = None, none: bool = False
) -> Callable[[Any, Any, str], tuple[str, ...]]:
    """A click callback: 'a,b' -> ('a', 'b') checked against `allowed`; 'none' -> () when `none`."""

    def convert(ctx: Any, param: Any, value: str) -> tuple[str, ...]:
        if none and value == "none":
            return ()
        try:
            return parse_list(value, allowed)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return convert


def sizes_option(ctx: Any, param: Any, value: str) -> tuple[tuple[int, int], ...]:
    """A click callback: '128x128,480x270' -> ((128, 128), (480, 270)); 'none' -> ()."""
    if value == "none":
        return ()
    try:
        return parse_sizes(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def batches_option(ctx: Any, param: Any, value: str) -> tuple[int, ...]:
    """A click callback: '1,4,8' -> (1, 4, 8), each >= 1."""
    try:
        out = tuple(int(v) for v in parse_list(value))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if any(b < 1 for b in out):
        raise click.BadParameter("batches must be >= 1")
    return out
