"""The CPU model call: the generic one-step sampler against `OneStep`, alternated in one process.

    python -m benchmarks.cpu_step                   # bf16, batch 4 of 480x270 -> 1080p, 11 pairs
    python -m benchmarks.cpu_step --precision fp32 --size 960x540 --pairs 5

Both run the shipped default model as `gtasr-stream` does on a CPU: bf16 autocast with channels-last
weights where bf16 is native (the generic path with `bicubic_x4`), float32 elsewhere (the generic path
with contiguous weights, which an explicit `--fp32` keeps); noise and the exports keep the generic path
too. `OneStep` has channels-last weights in both. After one warm-up call each, the pairs alternate
their order; the result is the median wall and CPU time a frame of each and the median of the per-pair
ratios, with the glibc allocator settings of the CLI. Writes benchmarks/results/cpu_step_<device>_<date>.json.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import click
import torch

from gtasr_stream.cli import keep_freed_memory
from gtasr_stream.model import ConsistencyModel
from gtasr_stream.model.consistency import bicubic_x4, sample_one_step
from gtasr_stream.model.onestep import OneStep
from gtasr_stream.weights import load_net

from .common import RESULTS, environment, result_stem, sizes_option, write_json


@click.command()
@click.option("--size", default="480x270", callback=sizes_option, help="LR WxH.")
@click.option("--batch", default=4, show_default=True, type=click.IntRange(1))
@click.option("--pairs", default=11, show_default=True, type=click.IntRange(1))
@click.option(
    "--precision",
    default="bf16",
    show_default=True,
    type=click.Choice(["bf16", "fp32"]),
    help="bf16 autocast (CPUs with native bf16) or float32 (the default elsewhere).",
)
@click.option("--results-dir", default=RESULTS, type=click.Path(file_okay=False, path_type=Path))
def main(
    size: tuple[tuple[int, int], ...], batch: int, pairs: int, precision: str, results_dir: Path
) -> None:
    keep_freed_memory()
    ((w, h),) = size
    net, _ = load_net()
    plain = ConsistencyModel(net).eval()  # float32: contiguous weights, the generic sampler
    model = copy.deepcopy(plain).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    fast = OneStep(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    lq = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    generic = model if precision == "bf16" else plain  # as the Upscaler holds them
    bicubic = bicubic_x4 if precision == "bf16" else None
    subjects = {"generic": lambda: sample_one_step(generic, lq, None, bicubic), "onestep": lambda: fast(lq)}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in subjects}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for f in subjects.values():
            f()
        for i in range(pairs):
            for name, f in subjects.items() if i % 2 else reversed(subjects.items()):
                wall, cpu = time.perf_counter(), time.process_time()
                f()
                times[name].append(
                    ((time.perf_counter() - wall) / batch, (time.process_time() - cpu) / batch)
                )
    ratios = [g[0] / o[0] for g, o in zip(times["generic"], times["onestep"], strict=True)]
    rows = {
        k: {
            "wall_median": 1e3 * statistics.median(t[0] for t in v),
            "cpu_median": 1e3 * statistics.median(t[1] for t in v),
            "wall": [1e3 * t[0] for t in v],
        }
        for k, v in times.items()
    }
    env = environment(torch.device("cpu"), "benchmarks.cpu_step")
    doc = {
        "env": env,
        "size": [w, h],
        "batch": batch,
        "pairs": pairs,
        "precision": precision,
        "ms_per_frame": rows,
    }
    doc["generic_over_onestep_median"] = statistics.median(ratios)
    for name, row in rows.items():
        print(f"{name}: {row['wall_median']:.0f} ms a frame (CPU {row['cpu_median']:.0f} ms)")
    print(f"generic / OneStep, median of {pairs} pairs: {statistics.median(ratios):.2f}x")
    path = results_dir / f"{result_stem('cpu_step', env)}.json"
    write_json(path, doc)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
