"""Small-budget ablations of METHOD.md's choices, same seed, evaluated on the held-out photos.

    python -m benchmarks.ablations --stage1-steps 60 --stage2-steps 30 --init runs/tiny

1. Stage I with and without Trajectory Alignment (from scratch).
2. Stage II with Rect's gradient (ours) and without it (the published code), from one Stage I run.
Writes benchmarks/results/ablations_<device>.json with the machine, versions, date and command.
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import av
import click
import torch

from training.evaluate import EvaluateOptions, evaluate
from training.options import Stage1Options, Stage2Options
from training.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@click.command()
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=SHARED / "photos" / "train")
@click.option("--val", type=click.Path(exists=True, path_type=Path), default=SHARED / "photos" / "val")
@click.option(
    "--init", type=click.Path(exists=True, path_type=Path), required=True, help="Stage I run for Stage II."
)
@click.option("--preset", default="tiny")
@click.option("--stage1-steps", default=60)
@click.option("--stage2-steps", default=30)
@click.option("--batch", default=4)
@click.option("--crop", default=128)
@click.option("--lr", default=5e-4)
@click.option("--device", default="auto")
def main(
    data: Path,
    val: Path,
    init: Path,
    preset: str,
    stage1_steps: int,
    stage2_steps: int,
    batch: int,
    crop: int,
    lr: float,
    device: str,
) -> None:
    work = Path(tempfile.mkdtemp(prefix="gtasr-ablation-"))
    common: dict[str, Any] = dict(
        data=data,
        preset=preset,
        batch=batch,
        crop=crop,
        lr=lr,
        ema=0.99,
        device=device,
        seed=0,
        checkpoint_every=10**9,
        log_every=10,
    )
    runs: dict[str, Path] = {}
    for ta in (True, False):
        cfg = Stage1Options(out=work / f"s1_ta_{ta}", steps=stage1_steps, trajectory_alignment=ta, **common)
        runs[f"stage1 {'with' if ta else 'without'} TA, {stage1_steps} steps"] = train(cfg, "stage1")
    for published in (False, True):
        cfg2 = Stage2Options(
            out=work / f"s2_pub_{published}",
            steps=stage2_steps,
            init=init,
            rect_published=published,
            **common,
        )
        name = "without" if published else "with"
        runs[f"stage2 Rect {name} gradient, {stage2_steps} steps from {init.name}"] = train(cfg2, "stage2")
    results = {}
    for name, weights in runs.items():
        ev = EvaluateOptions(
            weights=weights, val=val, out=work / "eval", peers=None, crop=crop, clips=0, device=device
        )
        results[name] = evaluate(ev)["gtasr"]
    report = {
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available() and device != "cpu"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "av": av.__version__,
        "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.ablations " + " ".join(sys.argv[1:]),
        "settings": {k: str(v) for k, v in common.items()}
        | {"stage1_steps": stage1_steps, "stage2_steps": stage2_steps},
        "results": {k: {m: round(float(v), 5) for m, v in r.items()} for k, r in results.items()},
    }
    out = (
        Path(__file__).parent
        / "results"
        / f"ablations_{'cuda' if 'CPU' not in report['device'] else 'cpu'}.json"
    )
    out.write_text(json.dumps(report, indent=1) + "\n")
    click.echo(json.dumps(report["results"], indent=1))


if __name__ == "__main__":
    main()
