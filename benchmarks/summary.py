"""benchmarks/results/summary.json: the issue's headline figures, read from throughput result files
(one or several runs on one device) and one pipeline result file, each figure with where it came
from, its target and whether it is met.

    python -m benchmarks.summary --throughput benchmarks/results/throughput_X.json \\
        --pipeline benchmarks/results/pipeline_X.json

Values are only ever copied from measurements in those files; a figure that was not measured (a case
skipped on the CPU, a file not given) is null with the reason. Without --throughput/--pipeline the
newest file of each kind in --results-dir is used; all files must come from the same device.
"""

from __future__ import annotations

import datetime
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from .common import RESULTS, markdown_table, write_json

Doc = dict[str, Any]
# The targets (issue 6, DESIGN.md): measured on an H100 or H200 in FP16.
TARGETS: dict[str, dict[str, Any]] = {
    "e2e_fps_960x540_to_3840x2160": {
        "op": ">=",
        "value": 60,
        "unit": "fps",
        "what": "real-time preset, audio copied",
    },
    "e2e_fps_480x270_to_1920x1080": {"op": ">=", "value": 240, "unit": "fps", "what": "real-time preset"},
    "model_ms_paper_128_to_512_batch8": {
        "op": "<=",
        "value": 5,
        "unit": "ms/frame",
        "what": "paper preset, batch 8",
    },
    "e2e_over_model_ratio": {"op": ">=", "value": 0.9, "unit": "", "what": "of the 960x540 run above"},
    "speed_over_animevideov3_960x540": {
        "op": ">",
        "value": 1.0,
        "unit": "x",
        "what": "best real-time preset fps / best realesr-animevideov3 fps at 960x540 input",
    },
}
CONDITION = "H100 or H200, FP16"


def _source(r: Doc, keys: tuple[str, ...]) -> Doc:
    return {k: r.get(k) for k in keys}


RUN_KEYS = (
    "clip",
    "preset",
    "backend",
    "precision",
    "batch",
    "decoder",
    "encoder",
    "audio_copied",
    "fps",
    "model_fps",
)
CASE_KEYS = ("model", "backend", "precision", "batch", "lr_size", "fps", "ms_per_frame")


def e2e_run(pipeline: Doc | None, size: tuple[int, int], preset: str) -> tuple[Doc | None, str | None]:
    """The fastest ok run of `preset` on a generated clip of LR `size`, preferring runs that copied
    audio (the target's condition); or None and the reason."""
    if pipeline is None:
        return None, "no pipeline results given"
    runs = [
        r
        for r in pipeline["runs"]
        if r.get("clip_kind") == "generated" and r.get("lr_size") == list(size) and r["preset"] == preset
    ]
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        why = "; ".join(sorted({str(r.get("reason")) for r in runs})) or "no such run"
        return None, f"no measured {preset} run on a generated {size[0]}x{size[1]} clip ({why})"
    with_audio = [r for r in ok if r.get("audio_copied")]
    return max(with_audio or ok, key=lambda r: r["fps"]), None


def best_case(
    throughput: Doc | None, model: str, size: tuple[int, int], batch: int | None = None
) -> tuple[Doc | None, str | None]:
    """The fastest ok throughput case of `model` at LR `size` (and batch), or None and the reason."""
    if throughput is None:
        return None, "no throughput results given"
    cases = [
        c
        for c in throughput["cases"]
        if c["model"] == model
        and c.get("lr_size") == list(size)
        and (batch is None or c.get("batch") == batch)
    ]
    ok = [c for c in cases if c["status"] == "ok"]
    if not ok:
        unavailable = [c for c in throughput["cases"] if c["model"] == model and c["status"] == "unavailable"]
        why = (
            "; ".join(sorted({str(c.get("reason")) for c in cases + unavailable})) or "not in the run's cases"
        )
        at = f" batch {batch}" if batch else ""
        return None, f"{model} at {size[0]}x{size[1]}{at} not measured ({why})"
    return max(ok, key=lambda c: c["fps"]), None


def _figure(key: str, value: float | None, reason: str | None, source: Doc | None) -> Doc:
    t = TARGETS[key]
    met = None
    if value is not None:
        met = {">=": value >= t["value"], "<=": value <= t["value"], ">": value > t["value"]}[t["op"]]
    return {
        "value": value,
        "reason": reason,
        "source": source,
        "target": {**t, "condition": CONDITION},
        "met": met,
    }


def summarize(
    throughput: Doc | None,
    pipeline: Doc | None,
    realtime_preset: str = "tiny",
    files: Doc | None = None,
    sizes: tuple[tuple[int, int], ...] = ((960, 540), (480, 270), (128, 128)),
) -> Doc:
    """The summary document from the two result documents (either may be None).

    `sizes`: the LR sizes the figures are read at (4K and 1080p end to end, the paper preset's); only
    `benchmarks.gpu_check --dry-run` changes them, to check the plumbing on tiny CPU runs."""
    details: dict[str, Doc] = {}
    big, small, paper_size = sizes
    # 1. end to end, the real-time preset at both target sizes
    runs: dict[tuple[int, int], Doc | None] = {}
    for (w, h), key in (
        (big, "e2e_fps_960x540_to_3840x2160"),
        (small, "e2e_fps_480x270_to_1920x1080"),
    ):
        run, why = e2e_run(pipeline, (w, h), realtime_preset)
        runs[(w, h)] = run
        details[key] = _figure(key, run["fps"] if run else None, why, _source(run, RUN_KEYS) if run else None)
    # 2. the paper preset, model only, 128x128 at batch 8 (the fastest backend/precision measured)
    case, why = best_case(throughput, "paper", paper_size, batch=8)
    details["model_ms_paper_128_to_512_batch8"] = _figure(
        "model_ms_paper_128_to_512_batch8",
        case["ms_per_frame"] if case else None,
        why,
        _source(case, CASE_KEYS) if case else None,
    )
    # 3. e2e over model-only, both measured in the same pipeline run (the 960x540 one above)
    run = runs[big]
    ratio = run.get("e2e_over_model") if run else None
    why = None if ratio is not None else f"no {big[0]}x{big[1]} run with a model-only measurement"
    details["e2e_over_model_ratio"] = _figure(
        "e2e_over_model_ratio", ratio, why, run and _source(run, RUN_KEYS)
    )
    # 4. against realesr-animevideov3 at equal input size, each at its best batch/backend/precision
    ours, why_ours = best_case(throughput, realtime_preset, big)
    peer, why_peer = best_case(throughput, "realesr_animevideov3", big)
    speed = ours["fps"] / peer["fps"] if ours and peer else None
    details["speed_over_animevideov3_960x540"] = _figure(
        "speed_over_animevideov3_960x540",
        speed,
        None if speed is not None else "; ".join(w for w in (why_ours, why_peer) if w),
        {"ours": ours and _source(ours, CASE_KEYS), "peer": peer and _source(peer, CASE_KEYS)}
        if speed
        else None,
    )
    envs = [d["env"] for d in (throughput, pipeline) if d is not None]
    device = envs[0]["device_name"] if envs else None
    for d in details.values():  # the targets are for Hopper in FP16: say when a figure is not that
        src = d["source"] or {}
        precisions = {x.get("precision") for x in (src.get("ours"), src.get("peer")) if x} or {
            src.get("precision")
        }
        d["conditions_hold"] = bool(
            device and ("H100" in device or "H200" in device) and precisions == {"fp16"}
        )
    return {
        "schema": 1,
        "device": device,
        "driver": envs[0].get("driver") if envs else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks.summary", *sys.argv[1:]]),
        "realtime_preset": realtime_preset,
        "sources": files or {},
        "measured": {
            "throughput": throughput and throughput["env"]["date"],
            "pipeline": pipeline and pipeline["env"]["date"],
        },
        **{k: d["value"] for k, d in details.items()},
        "details": details,
        "note": f"targets are for {CONDITION} (issue 6); where conditions_hold is false, 'met' only compares numbers",
    }


def newest(results_dir: Path, kind: str) -> Path | None:
    """The result file of `kind` whose measurement date is the latest, or None."""
    found = []
    for p in results_dir.glob(f"{kind}_*.json"):
        try:
            found.append((json.loads(p.read_text())["env"]["date"], p))
        except (OSError, ValueError, KeyError):
            continue
    return max(found)[1] if found else None


def to_markdown(summary: Doc) -> str:
    rows = []
    for key, d in summary["details"].items():
        t = d["target"]
        met = {True: "met", False: "missed", None: "—"}[d["met"]]
        rows.append([key, d["value"], f"{t['op']} {t['value']} {t['unit']}".strip(), met, d["reason"] or ""])
    return f"Summary, {summary['device']}\n\n" + markdown_table(
        ["figure", "value", "target", "", "note"], rows
    )


@click.command()
@click.option(
    "--throughput",
    "throughput_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Repeatable: the cases of several runs on one device are merged.",
)
@click.option("--pipeline", "pipeline_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--realtime-preset", default="tiny", help="The preset the e2e targets are for.")
@click.option("--results-dir", default=RESULTS, type=click.Path(path_type=Path))
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Default: RESULTS/summary.json.",
)
def main(
    throughput_paths: tuple[Path, ...],
    pipeline_path: Path | None,
    realtime_preset: str,
    results_dir: Path,
    out: Path | None,
) -> None:
    """Write summary.json from throughput and pipeline result files (default: the newest of each)."""
    if not throughput_paths:
        found = newest(results_dir, "throughput")
        throughput_paths = (found,) if found else ()
    pipeline_path = pipeline_path or newest(results_dir, "pipeline")
    throughputs = [json.loads(p.read_text()) for p in throughput_paths]
    pipeline = json.loads(pipeline_path.read_text()) if pipeline_path else None
    names = {d["env"]["device_name"] for d in [*throughputs, pipeline] if d is not None}
    if len(names) > 1:
        raise click.ClickException(
            f"the results come from different devices ({', '.join(sorted(names))}): pass --throughput and --pipeline"
        )
    throughput = None
    if throughputs:  # one document: the first run's machine, every run's cases
        throughput = {**throughputs[0], "cases": [c for d in throughputs for c in d["cases"]]}
    files = {
        "throughput": [str(p) for p in throughput_paths],
        "pipeline": pipeline_path and str(pipeline_path),
    }
    summary = summarize(throughput, pipeline, realtime_preset, files)
    out = out or results_dir / "summary.json"
    write_json(out, summary)
    print(to_markdown(summary))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
