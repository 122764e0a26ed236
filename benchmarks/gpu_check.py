"""One prepared command for a lent GPU (issue 17): every check and measurement the device time is for,
each part in its own subprocess under its own time limit, so that a part which hangs, crashes or runs
long is recorded "skipped: why" (or "failed: why") and the others still run.

    python -m benchmarks.gpu_check                        # on an H100/H200: at most --budget 420 s
    python -m benchmarks.gpu_check --dry-run              # CPU, tiny sizes: checks this script (CI)
    python -m benchmarks.gpu_check --parts e2e_4k,aoti    # a re-run of some parts
    python -m benchmarks.gpu_check --prepare              # here: .gpu/ with what the device lacks

Parts (benchmarks/gpu_parts.py), in priority order: env (device, driver, torch, CUDA, whether NVENC
and NVDEC open), tests (pytest -m gpu), throughput (peers, tiny, small: eager, FP16, batches 1 and 8,
four sizes), e2e_4k and e2e_1080p (the pipeline at 960x540 -> 4K and 480x270 -> 1080p with audio;
CPU and NVDEC decoding; x264, SVT-AV1, NVENC when it opens), paper, preview (model latency at
640x480), profile (torch.profiler over the 4K pipeline: what bounds it), convert (fp16 -> YUV, eager
vs torch.compile), compile (torch.compile with CUDA graphs), aoti (AOTInductor, when it compiles
within its limit).

Writes under --out ($OUT, else ./out): summary.json, gpu_check_<device>_<date>.json (every part's
full result) and .md (the tables), gpu_check.log (every part's output), and throughput_*.json /
pipeline_*.json that `benchmarks.summary` reads; summary.json also goes to --results-dir
(benchmarks/results; --dry-run writes nothing there). How to run it on the device: benchmarks/NOTES.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from . import pipeline, summary, throughput
from .common import (
    REPO,
    RESULTS,
    SHARED,
    markdown_table,
    parse_list,
    parse_sizes,
    result_stem,
    write_json,
    write_text,
)
from .gpu_parts import (
    DEVICE_PLAN,
    DRY_PLAN,
    E2E_PARTS,
    PART_FUNCTIONS,
    PARTS,
    Context,
    Plan,
    default_weights_dir,
)

Doc = dict[str, Any]
MIN_PART_S = 3.0  # a part with less than this left of the budget is not started
# Headline figures besides benchmarks.summary's targets: each is a number or "skipped: why".
EXTRA = (
    "model_fps_tiny_eager",
    "model_fps_tiny_compile",
    "model_fps_tiny_aoti",
    "preview_model_ms",
    "gpu_tests_failed",
)
HEADLINE = (*summary.TARGETS, *EXTRA)
AV_WHEEL = "av==18.1.0"  # the PyAV this project is tested with; the GPU image has none
CARRIED_PEERS = ("realesr_animevideov3", "span_x4")  # realesrgan_x4plus (33 MB) would pass 64 MiB


# --------------------------------------------------------------------------------- running the parts
def run_part(name: str, limit: float, work: Path, log: Path) -> Doc:
    """Part `name` in a subprocess of its own process group, killed (all of it) at `limit` s."""
    out = work / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--part", name, "--work", str(work)]
    t0 = time.monotonic()
    with log.open("a") as f:
        f.write(f"\n===== {name} (limit {limit:.0f} s) =====\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # pytest, inductor's compile workers: all of the group
            proc.wait()
            return {
                "status": "skipped",
                "reason": f"its time limit of {limit:.0f} s was reached",
                "seconds": limit,
            }
    seconds = time.monotonic() - t0
    if rc != 0 or not out.is_file():
        return {"status": "failed", "reason": f"exit code {rc}: {_last_line(log)}", "seconds": seconds}
    return {"status": "ok", "reason": None, "seconds": seconds, "result": json.loads(out.read_text())}


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def run_all(plan: Plan, parts: tuple[str, ...], work: Path, log: Path) -> dict[str, Doc]:
    """Each part in order, under min(its limit, what is left of the budget)."""
    deadline = time.monotonic() + plan.budget
    results: dict[str, Doc] = {}
    for name in parts:
        left = deadline - time.monotonic()
        if left < MIN_PART_S:
            results[name] = {"status": "skipped", "reason": f"the budget of {plan.budget:.0f} s was spent"}
        else:
            results[name] = run_part(name, min(plan.limits[name], left), work, log)
        r = results[name]
        took = f" in {r['seconds']:.0f} s" if "seconds" in r else ""
        print(
            f"[gpu_check] {name}: {r['status']}{took}" + (f": {r['reason']}" if r["reason"] else ""),
            flush=True,
        )
    return results


# ------------------------------------------------------------------------------------------- summary
def _doc(results: dict[str, Doc], part: str, key: str) -> Doc | None:
    r = results.get(part)
    return r["result"][key] if r and r["status"] == "ok" else None


def _merged(results: dict[str, Doc], parts: tuple[str, ...], key: str, items: str) -> Doc | None:
    """One result document of several parts' (the first one's machine, everyone's cases or runs)."""
    docs = [d for p in parts if (d := _doc(results, p, key))]
    if not docs:
        return None
    merged = {**docs[0], items: [c for d in docs for c in d[items]]}
    if "clips" in docs[0]:
        merged["clips"] = [c for d in docs for c in d["clips"]]
    return merged


MODEL_PARTS = ("throughput", "paper", "compile", "aoti")


def _why_not(results: dict[str, Doc], *parts: str) -> str | None:
    """Why a figure from `parts` is missing when one of them did not run to the end."""
    why = []
    for p in parts:
        r = results.get(p)
        if r is None:
            why.append(f"part {p} was not run (--parts)")
        elif r["status"] != "ok":
            why.append(f"part {p} {r['status']}: {r['reason']}")
    return "; ".join(why) or None


def _fps(doc: Doc | None, size: tuple[int, int], batch: int) -> float | str:
    case, why = summary.best_case(doc, "tiny", size, batch)
    return case["fps"] if case else f"skipped: {why}"


def build_summary(plan: Plan, results: dict[str, Doc], files: Doc) -> Doc:
    """benchmarks.summary's figures from the parts' documents, plus EXTRA; each a number or 'skipped: why'."""
    merged = _merged(results, MODEL_PARTS, "throughput", "cases")
    e2e = _merged(results, E2E_PARTS, "pipeline", "runs")
    big, small = parse_sizes(plan.e2e_sizes)
    paper = parse_sizes(plan.paper_sizes)[0] if plan.dry_run else (128, 128)
    s = summary.summarize(merged, e2e, "tiny", files, (big, small, paper))
    sources = {
        "e2e_fps_960x540_to_3840x2160": (E2E_PARTS[0],),
        "e2e_fps_480x270_to_1920x1080": (E2E_PARTS[1],),
        "model_ms_paper_128_to_512_batch8": ("paper",),
        "e2e_over_model_ratio": (E2E_PARTS[0],),
        "speed_over_animevideov3_960x540": ("throughput",),
    }
    for key, parts in sources.items():
        if s[key] is None:
            s[key] = f"skipped: {_why_not(results, *parts) or s['details'][key]['reason']}"
    b = plan.e2e_batch
    for key, part in (("eager", "throughput"), ("compile", "compile"), ("aoti", "aoti")):
        doc = _doc(results, part, "throughput")
        s[f"model_fps_tiny_{key}"] = _fps(doc, big, b) if doc else f"skipped: {_why_not(results, part)}"
    preview = _doc(results, "preview", "stage_ms") if "preview" in results else None
    s["preview_model_ms"] = preview if preview is not None else f"skipped: {_why_not(results, 'preview')}"
    tests = results.get("tests")
    if tests and tests["status"] == "ok" and "passed" in tests["result"]:
        t = tests["result"]
        s["gpu_tests_failed"] = t["failures"] + t["errors"]
        s["gpu_tests"] = {k: t[k] for k in ("passed", "failures", "errors", "skipped", "failed")}
    else:
        why = _why_not(results, "tests") or (tests or {}).get("result", {}).get("reason")
        s["gpu_tests_failed"] = f"skipped: {why}"
    env = _doc(results, "env", "env")
    env_part = results.get("env", {}).get("result", {})
    s.update(
        {
            "what": {
                "model_fps_tiny_*": f"tiny, model only, LR {big[0]}x{big[1]}, batch {b}",
                "preview_model_ms": f"preview model stage (planes -> RGB -> 4x), {plan.preview_size}, batch 1",
                "sizes": {"e2e": [list(big), list(small)], "paper": list(paper)},
            },
            "dry_run": plan.dry_run,
            "torch": env_part.get("torch"),
            "cuda": env_part.get("cuda"),
            "nvenc": env_part.get("nvenc"),
            "nvdec": env_part.get("nvdec"),
            "parts": {
                p: r["status"] + (f": {r['reason']}" if r["reason"] else "") for p, r in results.items()
            },
        }
    )
    if env:
        s["device"], s["driver"] = s["device"] or env["device_name"], s["driver"] or env["driver"]
    return s


def to_markdown(s: Doc, results: dict[str, Doc]) -> str:
    parts = markdown_table(
        ["part", "status", "seconds"], [[p, s["parts"][p], r.get("seconds")] for p, r in results.items()]
    )
    rows = []
    for key in HEADLINE:
        t = summary.TARGETS.get(key)
        target = f"{t['op']} {t['value']} {t['unit']}".strip() if t else ""
        met = s["details"][key]["met"] if t else None
        rows.append([key, s[key], target, {True: "met", False: "missed", None: ""}[met]])
    head = f"GPU check on {s['device']} (torch {s['torch']}, CUDA {s['cuda']}, driver {s['driver']})\n\n"
    io = f"\nNVENC: {s['nvenc']}\nNVDEC: {s['nvdec']}\n\n"
    return head + parts + io + markdown_table(["figure", "value", "target", ""], rows)


def write_results(plan: Plan, results: dict[str, Doc], out: Path, results_dir: Path | None) -> Doc:
    """Result files under `out` (8 at most come back from the device) and summary.json."""
    env = _doc(results, "env", "env") or {"device": "?", "device_name": "unknown", "date": _now()}
    stem = result_stem("gpu_check", env)
    files: Doc = {}
    if merged := _merged(results, MODEL_PARTS, "throughput", "cases"):  # as benchmarks.summary reads them
        name = result_stem("throughput", merged["env"]) + ".json"
        merged["files"] = {"json": name, "markdown": None, "plot": None}
        write_json(out / name, merged)
        files["throughput"] = [name]
    if pl := _merged(results, E2E_PARTS, "pipeline", "runs"):
        name = result_stem("pipeline", pl["env"]) + ".json"
        write_json(out / name, {**pl, "files": {"json": name, "markdown": None}})
        files["pipeline"] = name
    s = summary_doc = build_summary(plan, results, files)
    write_json(out / "summary.json", summary_doc)
    if results_dir is not None:
        write_json(results_dir / "summary.json", summary_doc)
    short = to_markdown(s, results)
    table = ""
    if prof := _doc(results, "profile", "top_host"):
        top = _doc(results, "profile", "top_device")
        table += f"\nprofile (end to end, tiny, first e2e size)\n\n```\n{top or ''}\n{prof}\n```\n"
    if conv := results.get("convert", {}).get("result"):
        table += f"\nfp16 output -> YUV, eager vs torch.compile: {conv}\n"
    if merged:
        table += f"\nmodel only\n\n{throughput.to_markdown(merged)}"
    if pl:
        table += f"\nend to end\n\n{pipeline.to_markdown(pl)}"
    write_text(out / f"{stem}.md", short + table)
    write_json(out / f"{stem}.json", {"plan": dataclasses.asdict(plan), "parts": results, "summary": s})
    print(table)
    print(short)  # last: what the device call's output tail shows
    return s


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------- prepare
def prepare_carry(into: Path) -> None:
    """Here, before a device call: the PyAV wheel for the device's Python 3.12 and the small peers'
    weights, under `into` (the repository's .gpu/, ignored by git, named in the call's carry)."""
    whl, weights = into / "whl", into / "weights"
    whl.mkdir(parents=True, exist_ok=True)
    weights.mkdir(parents=True, exist_ok=True)
    if not list(whl.glob("av-*.whl")):
        platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64")]
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version=3.12",
        ]
        subprocess.run([*cmd, "--implementation=cp", *platforms, "-d", str(whl), AV_WHEEL], check=True)
    for peer in CARRIED_PEERS:
        src = SHARED / "weights" / throughput.PEER_FILES[peer]  # type: ignore[index]
        if src.is_file():
            shutil.copyfile(src, weights / src.name)
    size = sum(p.stat().st_size for p in into.rglob("*") if p.is_file())
    print(
        f"{into}: {size / 2**20:.1f} MiB ({', '.join(sorted(p.name for p in into.rglob('*') if p.is_file()))})"
    )


# ----------------------------------------------------------------------------------------------- CLI
@click.command()
@click.option("--dry-run", is_flag=True, help="CPU, tiny sizes and limits: check the script, not the GPU.")
@click.option("--budget", type=click.FloatRange(1), default=None, help="Seconds for all parts (device: 420).")
@click.option("--parts", default=",".join(PARTS), help=f"Comma-separated, from {','.join(PARTS)}.")
@click.option("--limit", multiple=True, help="PART=SECONDS, repeatable: one part's own limit.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Default: $OUT or ./out."
)
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--weights-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--prepare", is_flag=True, help="Here, not on the device: put what it lacks under --into.")
@click.option("--into", type=click.Path(file_okay=False, path_type=Path), default=REPO / ".gpu")
@click.option("--part", hidden=True, default=None)
@click.option("--work", hidden=True, type=click.Path(path_type=Path), default=None)
def main(
    dry_run: bool,
    budget: float | None,
    parts: str,
    limit: tuple[str, ...],
    out: Path | None,
    results_dir: Path | None,
    weights_dir: Path | None,
    prepare: bool,
    into: Path,
    part: str | None,
    work: Path | None,
) -> None:
    """Every GPU check and measurement of issue 17 in one command, each part under its own time limit."""
    if prepare:
        prepare_carry(into)
        return
    if part is not None:  # inside a part's subprocess: run it, write its document
        assert work is not None
        cfg = json.loads((work / "plan.json").read_text())
        plan = Plan(**cfg["plan"])
        ctx = Context(work=work, weights_dir=Path(cfg["weights_dir"]))
        write_json(work / f"{part}.json", PART_FUNCTIONS[part](plan, ctx))
        return
    plan = DRY_PLAN if dry_run else DEVICE_PLAN
    try:
        chosen = tuple(parse_list(parts, PARTS))
        limits = dict(plan.limits)
        for item in limit:
            name, _, seconds = item.partition("=")
            if name not in PARTS:
                raise ValueError(f"--limit {item}: '{name}' is not one of {', '.join(PARTS)}")
            limits[name] = float(seconds)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    plan = dataclasses.replace(plan, limits=limits, budget=budget or plan.budget)
    out = out or Path(os.environ.get("OUT") or REPO / "out")
    results_dir = None if dry_run else (results_dir or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "gpu_check.log"
    log.write_text(f"python -m benchmarks.gpu_check {' '.join(sys.argv[1:])}\n")
    os.environ.setdefault("SVT_LOG", "1")  # the parts inherit it: SVT-AV1 prints its banner otherwise
    with tempfile.TemporaryDirectory(prefix="gtasr-gpu-check-") as tmp:  # not under $OUT: 8 files come back
        work = Path(tmp)
        cfg = {"plan": dataclasses.asdict(plan), "weights_dir": str(weights_dir or default_weights_dir())}
        (work / "plan.json").write_text(json.dumps(cfg))
        results = run_all(plan, chosen, work, log)
    write_results(plan, results, out, results_dir)


if __name__ == "__main__":
    main()
