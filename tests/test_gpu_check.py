"""benchmarks/gpu_check.py, the one prepared command for a lent GPU: its --dry-run (every part, tiny
sizes, on the CPU) runs to the end and writes every headline figure as a number or "skipped: why",
so the script is known to work before device time is spent on it. No assertion is on speed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gpu_check
from benchmarks.gpu_parts import DEVICE_PLAN, DRY_PLAN, PARTS

REPO = Path(__file__).resolve().parents[1]


def _figure_ok(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) or (
        isinstance(v, str) and v.startswith("skipped: ") and len(v) > len("skipped: ")
    )


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out, json.loads((out / "summary.json").read_text()), done.stdout


@pytest.mark.slow
def test_dry_run_writes_every_figure_as_a_number_or_a_reason(
    dry_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, s, stdout = dry_run
    bad = {k: s.get(k) for k in gpu_check.HEADLINE if not _figure_ok(s.get(k))}
    assert not bad, bad
    assert set(s["parts"]) == set(PARTS)
    assert not [p for p, st in s["parts"].items() if st.startswith("failed")], s["parts"]
    # what the dry run must measure, or the plumbing from part to summary is broken
    for key in ("e2e_fps_960x540_to_3840x2160", "e2e_fps_480x270_to_1920x1080", "e2e_over_model_ratio"):
        assert isinstance(s[key], float) and s[key] > 0, (key, s[key])
    assert isinstance(s["model_fps_tiny_eager"], float) and isinstance(s["preview_model_ms"], float)
    assert isinstance(s["model_fps_tiny_compile"], float), s["parts"]["compile"]  # dynamo-traced step ran
    assert s["gpu_tests_failed"] == 0 and s["gpu_tests"]["passed"] == 0  # no CUDA here: all skipped
    assert s["dry_run"] is True and s["nvdec"] == "skipped: no CUDA device"
    assert s["nvenc"]["h264_nvenc"] == "NVENC is only tried with --device cuda"
    # aoti's 4 s limit is far below an AOTInductor compile: the part is killed and says so
    assert s["parts"]["aoti"].startswith("skipped: its time limit of 4 s")
    assert s["model_fps_tiny_aoti"].startswith("skipped: part aoti skipped: its time limit")
    assert "| figure | value | target |" in stdout  # the table is printed last


@pytest.mark.slow
def test_dry_run_files_fit_what_comes_back_from_the_device(dry_run: tuple[Path, dict[str, Any], str]) -> None:
    out, s, _ = dry_run
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and all(p.parent == out for p in files), files  # at most 8, no folders
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in files)
    names = {p.name for p in files}
    assert {"summary.json", "gpu_check.log"} <= names
    [full] = [p for p in files if p.name.startswith("gpu_check_") and p.suffix == ".json"]
    doc = json.loads(full.read_text())
    assert doc["summary"] == s and doc["plan"]["dry_run"] is True
    assert doc["parts"]["throughput"]["result"]["throughput"]["cases"]  # the full documents are kept
    profile = doc["parts"]["profile"]["result"]
    assert profile["frames"] == DRY_PLAN.profile_frames and "aten::" in profile["top_host"]
    assert doc["parts"]["convert"]["result"]["max_code_value_difference"] == 0  # dynamo, unfused: same ops
    [tp] = [p for p in files if p.name.startswith("throughput_")]
    [pl] = [p for p in files if p.name.startswith("pipeline_")]
    assert s["sources"] == {"throughput": [tp.name], "pipeline": pl.name}
    backends = {c["backend"] for c in json.loads(tp.read_text())["cases"] if c["model"] == "tiny"}
    assert backends == {"torch", "torch+compile:eager"}  # eager and compiled cases in one file
    assert "===== aoti (limit 4 s) =====" in (out / "gpu_check.log").read_text()


def test_a_part_that_did_not_run_is_named_in_each_figure_it_feeds() -> None:
    results: dict[str, dict[str, Any]] = {
        "e2e_4k": {"status": "failed", "reason": "exit code 1: boom", "seconds": 1.0},
        "tests": {"status": "skipped", "reason": "the budget of 420 s was spent"},
    }
    s = gpu_check.build_summary(DEVICE_PLAN, results, {})
    assert s["e2e_fps_960x540_to_3840x2160"] == "skipped: part e2e_4k failed: exit code 1: boom"
    assert s["e2e_over_model_ratio"] == "skipped: part e2e_4k failed: exit code 1: boom"
    assert s["e2e_fps_480x270_to_1920x1080"] == "skipped: part e2e_1080p was not run (--parts)"
    assert s["gpu_tests_failed"] == "skipped: part tests skipped: the budget of 420 s was spent"
    assert s["model_fps_tiny_eager"] == "skipped: part throughput was not run (--parts)"
    assert all(_figure_ok(s[k]) for k in gpu_check.HEADLINE)


def test_the_device_plan_fits_its_budget_and_the_issue() -> None:
    assert DEVICE_PLAN.budget <= 420  # the issue: one command within 7 minutes
    assert set(DEVICE_PLAN.limits) == set(PARTS) == set(DRY_PLAN.limits)
    assert DEVICE_PLAN.precision == "fp16" and DEVICE_PLAN.batches == "1,8"
    assert DEVICE_PLAN.sizes == "128x128,480x270,960x540,1920x1080"
    assert DEVICE_PLAN.e2e_sizes == "960x540,480x270" and DEVICE_PLAN.preview_size == "640x480"
