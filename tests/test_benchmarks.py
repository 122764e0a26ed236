"""The benchmark code (benchmarks/throughput.py, pipeline.py, summary.py, common.py): the timing rule,
the guards that skip hopeless cases, the result files and the summary. No assertion is on real speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import av
import pytest
import torch
from click.testing import CliRunner

from benchmarks import clips, pipeline, plot, summary, throughput
from benchmarks.common import TooSlow, markdown_table, parse_sizes, peak_bytes, time_calls
from gtasr_stream.errors import UserError
from gtasr_stream.pipeline import STAGES

PNG = b"\x89PNG\r\n\x1a\n"


class FakeDevice:
    """An asynchronous device on a fake clock: work is queued and only lands on the clock at sync()."""

    def __init__(self) -> None:
        self.now = 0.0
        self.queued = 0.0
        self.events: list[str] = []

    def clock(self) -> float:
        return self.now

    def launch(self, seconds: float) -> None:
        self.queued += seconds

    def sync(self) -> None:
        self.events.append("sync")
        self.now += self.queued
        self.queued = 0.0


# ------------------------------------------------------------------------------------------ timing
def test_time_calls_synchronises_and_takes_the_median_of_timed_calls() -> None:
    dev = FakeDevice()
    work = iter([50.0, 5.0, 1.0, 6.0])  # the first call is the warm-up; median 5 != mean 4

    def make_input(i: int) -> int:
        dev.events.append(f"input {i}")
        dev.launch(100.0)  # generating an input is device work too: it must not be timed
        return i

    def fn(i: int) -> None:
        dev.events.append(f"call {i}")
        dev.launch(next(work))  # returns at once, like a CUDA kernel launch

    t = time_calls(fn, make_input, warmup=1, repeats=3, sync=dev.sync, clock=dev.clock)
    assert t.times_s == (5.0, 1.0, 6.0)  # warm-up dropped; without the syncs these would be 0 or 105
    assert t.median_s == 5.0 and t.min_s == 1.0
    assert dev.events[:4] == ["input 0", "sync", "call 0", "sync"]
    assert dev.events.count("sync") == 8


def test_time_calls_stops_after_the_first_call_when_over_budget() -> None:
    dev = FakeDevice()
    calls: list[int] = []

    def fn(i: int) -> None:
        calls.append(i)
        dev.launch(10.0)

    with pytest.raises(TooSlow, match="first call took 10 s"):
        time_calls(fn, lambda i: i, warmup=2, repeats=3, sync=dev.sync, clock=dev.clock, max_seconds=45)
    assert calls == [0]
    # within budget: all five calls run
    t = time_calls(fn, lambda i: i, warmup=2, repeats=3, sync=dev.sync, clock=dev.clock, max_seconds=55)
    assert len(t.times_s) == 3 and len(calls) == 6


def test_time_calls_rejects_no_repeats() -> None:
    with pytest.raises(ValueError):
        time_calls(lambda x: x, lambda i: i, warmup=0, repeats=0, sync=lambda: None)


def test_peak_bytes_counts_live_tensors_on_meta() -> None:
    def f() -> torch.Tensor:
        a = torch.ones(256, device="meta")  # 1 KiB
        b = a + 1  # 2 KiB live
        del a
        c = b * 2  # 2 KiB live again, never 3
        c.add_(1)  # in place: no new memory
        return c.view(16, 16)  # a view: no new memory

    assert peak_bytes(f) == 2048


def test_parse_sizes_and_table() -> None:
    assert parse_sizes("128x128, 480x270") == ((128, 128), (480, 270))
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_sizes("480*270")
    table = markdown_table(["a", "b"], [["x", 1.5], ["y", None]])
    assert table.splitlines()[1] == "|---|---:|" and "| y |  |" in table


# -------------------------------------------------------------------------------------- throughput
def _fake_subject(memory: int, gmac: float, ran: list[int]) -> throughput.Subject:
    return throughput.Subject(
        model="fake",
        kind="gtasr",
        backend="torch",
        precision="fp32",
        run=lambda x: ran.append(1) or x,  # type: ignore[func-returns-value]
        macs=lambda h, w: int(gmac * 1e9),
        memory=lambda b, h, w: memory,
        setup_s=0.0,
    )


def _options(tmp_path: Path, **kw: Any) -> throughput.ThroughputOptions:
    base: dict[str, Any] = dict(
        presets=("tiny",),
        backends=("torch",),
        precisions=("fp32",),
        batches=(1,),
        sizes=((32, 32),),
        peers=("bicubic",),
        repeats=1,
        warmup=0,
        device="cpu",
        max_seconds=10.0,
        max_memory_gb=None,
        peak_size=64,
        threads=None,
        weights_dir=tmp_path,
        results_dir=tmp_path,
        plot=False,
    )
    return throughput.ThroughputOptions(**{**base, **kw})


def test_time_case_skips_what_cannot_fit_or_finish(tmp_path: Path) -> None:
    ran: list[int] = []
    cpu = torch.device("cpu")
    opts = _options(tmp_path)
    big = throughput.time_case(_fake_subject(10**12, 1.0, ran), 1, (32, 32), opts, cpu, 1.0, memory_limit=1e9)
    assert big["status"] == "skipped" and "estimated peak memory" in big["reason"]
    # 1000 GMAC a frame at a measured 1 TFLOP/s peak is at least 2 s a call: 1 call > 1 s budget
    slow_opts = _options(tmp_path, max_seconds=1.0)
    slow = throughput.time_case(_fake_subject(1, 1000.0, ran), 1, (32, 32), slow_opts, cpu, 1.0, 1e9)
    assert slow["status"] == "skipped" and "matmul peak" in slow["reason"]
    assert ran == []  # neither case ran the subject
    ok = throughput.time_case(_fake_subject(1, 0.001, ran), 2, (32, 32), opts, cpu, 1.0, 1e9)
    assert ok["status"] == "ok" and ok["fps"] > 0 and ran == [1]
    assert ok["ms_per_frame"] == pytest.approx(ok["latency_ms"] / 2)


def test_time_case_records_out_of_memory_and_failures(tmp_path: Path) -> None:
    resets: list[int] = []

    def subject(error: Exception) -> throughput.Subject:
        def run(x: torch.Tensor) -> torch.Tensor:
            raise error

        s = _fake_subject(1, 0.001, [])
        s.run, s.reset = run, lambda: resets.append(1)
        return s

    cpu, opts = torch.device("cpu"), _options(tmp_path)
    ladder = throughput._OutOfMemory("out of GPU memory: batch reduced to 1")
    oom = throughput.time_case(subject(ladder), 2, (32, 32), opts, cpu, 1.0, 1e9)
    assert oom["status"] == "skipped" and oom["reason"].startswith("out of memory at batch 2")
    boom = throughput.time_case(subject(RuntimeError("boom")), 2, (32, 32), opts, cpu, 1.0, 1e9)
    assert boom["status"] == "failed" and boom["reason"] == "RuntimeError: boom"
    assert resets == [1, 1]  # the engine's batch is restored after each


def test_unavailable_backend_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    real = throughput.Upscaler

    def upscaler(*args: Any, backend: str = "torch", **kw: Any) -> Any:
        if backend == "trt":
            raise UserError("--backend trt needs TensorRT (not installed)")
        return real(*args, backend=backend, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(throughput, "Upscaler", upscaler)
    got = throughput.gtasr_subject("tiny", "trt", "fp32", torch.device("cpu"), 1)
    assert got == "not available: --backend trt needs TensorRT (not installed)"


def test_throughput_cli_minimal_case_writes_json_table_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--presets", "tiny", "--sizes", "32x32", "--batches", "1", "--repeats", "1", "--warmup", "0"]
    args += ["--device", "cpu", "--peak-size", "64", "--backends", "torch,nosuch"]
    args += ["--peers", "bicubic,realesr_animevideov3", "--weights-dir", str(tmp_path / "absent")]
    args += ["--results-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["benchmarks/throughput.py", *args])  # what the command records
    result = CliRunner().invoke(throughput.main, args)
    assert result.exit_code == 0, result.output
    [path] = tmp_path.glob("throughput_cpu-*.json")
    doc = json.loads(path.read_text())
    env = doc["env"]
    assert env["device"] == "cpu" and env["versions"]["torch"] == torch.__version__
    assert env["command"].startswith("python -m benchmarks.throughput --presets tiny")
    assert {"date", "device_name", "cpu_model", "torch_threads", "versions"} <= env.keys()
    assert doc["matmul_peak"]["fp32"]["tflops"] > 0
    assert doc["matmul_peak"]["bf16"]["tflops"] > 0  # on the CPU both ceilings, whatever precision ran
    cases = {(c["model"], c["backend"]): c for c in doc["cases"]}
    tiny = cases[("tiny", "torch")]
    assert tiny["status"] == "ok", tiny
    fractions = tiny["peak_fraction_by_dtype"]
    assert fractions[tiny["precision"]] == pytest.approx(tiny["peak_fraction"])
    assert set(fractions) == {"fp32", "bf16"}
    assert "% of fp32 peak" in (tmp_path / path.name.replace(".json", ".md")).read_text()
    assert tiny["fps"] > 0 and tiny["median_s"] > 0 and tiny["gmac_per_frame"] > 0 and tiny["tflops"] > 0
    assert tiny["lr_size"] == [32, 32] and tiny["hr_size"] == [128, 128] and tiny["batch"] == 1
    assert tiny["vs_bicubic"] == pytest.approx(tiny["fps"] / cases[("bicubic", "torch")]["fps"])
    assert tiny["vs_animevideov3"] is None  # its weights are absent here
    peer = cases[("realesr_animevideov3", "torch")]
    assert peer["status"] == "unavailable" and "not found" in peer["reason"]
    bad = cases[("tiny", "nosuch")]
    assert bad["status"] == "unavailable" and bad["reason"].startswith("not available:")
    assert (tmp_path / doc["files"]["markdown"]).read_text().count("\n| ") == 5  # header + 4 case rows
    assert (tmp_path / doc["files"]["plot"]).read_bytes()[:8] == PNG


def test_plot_has_one_line_per_model(tmp_path: Path) -> None:
    def case(model: str, size: list[int], fps: float) -> dict[str, Any]:
        return {
            "model": model,
            "backend": "torch",
            "precision": "fp16",
            "status": "ok",
            "lr_size": size,
            "fps": fps,
        }

    doc = {
        "env": {"device_name": "test"},
        "cases": [
            case("tiny", [128, 128], 500.0),
            case("tiny", [480, 270], 90.0),
            case("bicubic", [128, 128], 9e3),
        ],
    }
    out = plot.plot(doc, tmp_path / "p.png")
    assert out is not None and Path(out).read_bytes()[:8] == PNG


# ---------------------------------------------------------------------------------------- pipeline
def test_encoder_problem() -> None:
    assert pipeline.encoder_problem("libx264", cuda=False) is None
    assert "no encoder" in str(pipeline.encoder_problem("no_such_encoder", cuda=False))
    assert "--device cuda" in str(pipeline.encoder_problem("h264_nvenc", cuda=False))
    assert "not a video encoder" in str(pipeline.encoder_problem("aac", cuda=False))


def test_cut_clip_keeps_the_first_frames(tmp_path: Path) -> None:
    src = clips.make_clip(tmp_path / "in.mp4", 64, 48, frames=10)
    info = clips.clip_info(src)
    assert info == {"width": 64, "height": 48, "codec": "h264", "audio": True}
    assert clips.cut_clip(src, tmp_path / "cut.mp4", 4) == 4


def test_pipeline_cli_minimal_run(tmp_path: Path) -> None:
    args = [
        "--presets",
        "tiny",
        "--sizes",
        "64x48",
        "--frames",
        "4",
        "--real",
        "none",
        "--encoders",
        "libx264",
    ]
    args += [
        "--batches",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--backends",
        "torch,nosuch",
    ]
    args += ["--results-dir", str(tmp_path)]
    result = CliRunner().invoke(pipeline.main, args)
    assert result.exit_code == 0, result.output
    [path] = tmp_path.glob("pipeline_cpu-*.json")
    doc = json.loads(path.read_text())
    assert doc["encoders"]["libx264"]["available"] and not doc["decoders"]["nvdec"]["available"]
    ok, bad = doc["runs"]
    assert ok["status"] == "ok", ok
    assert ok["encoded"] == 4 and ok["fps"] > 0 and ok["model_fps"] > 0 and ok["e2e_over_model"] > 0
    assert ok["audio_copied"] and ok["bottleneck"] in STAGES and set(ok["busy_s"]) == set(STAGES)
    assert ok["lr_size"] == [64, 48] and ok["out_size"] == [256, 192] and ok["codec"] == "libx264"
    assert bad["status"] == "unavailable" and "nosuch" in bad["reason"]
    assert "| generated_64x48.mp4 | 64x48 → 256x192 |" in (tmp_path / doc["files"]["markdown"]).read_text()


# ----------------------------------------------------------------------------------------- summary
def _throughput_doc(device: str = "NVIDIA H100 80GB HBM3") -> dict[str, Any]:
    def case(
        model: str, size: list[int], batch: int, fps: float, status: str = "ok", **kw: Any
    ) -> dict[str, Any]:
        c = {"model": model, "backend": "torch", "precision": "fp16", "batch": batch, "lr_size": size}
        c.update(status=status, reason=kw.get("reason"))
        if status == "ok":
            c.update(fps=fps, ms_per_frame=1e3 / fps)
        return c

    return {
        "env": {"device_name": device, "date": "2026-11-23T00:00:00+00:00", "driver": "580"},
        "cases": [
            case("paper", [128, 128], 8, 250.0),  # 4 ms a frame
            case("paper", [128, 128], 1, 900.0),  # other batch: must not be picked
            case("tiny", [960, 540], 4, 80.0),
            case("tiny", [960, 540], 8, 100.0),
            case("realesr_animevideov3", [960, 540], 8, 50.0),
        ],
    }


def _pipeline_doc(device: str = "NVIDIA H100 80GB HBM3") -> dict[str, Any]:
    def run(size: list[int], fps: float, audio: bool, model_fps: float) -> dict[str, Any]:
        return {
            "preset": "tiny",
            "backend": "torch",
            "precision": "fp16",
            "batch": 8,
            "clip": "g",
            "clip_kind": "generated",
            "lr_size": size,
            "status": "ok",
            "fps": fps,
            "model_fps": model_fps,
            "e2e_over_model": fps / model_fps,
            "audio_copied": audio,
        }

    return {
        "env": {"device_name": device, "date": "2026-11-23T00:00:00+00:00"},
        "runs": [
            run([960, 540], 70.0, True, 100.0),
            run([960, 540], 90.0, False, 100.0),  # faster, but no audio copied: not the target's run
            run([480, 270], 200.0, True, 250.0),
        ],
    }


def test_summary_figures_targets_and_sources() -> None:
    s = summary.summarize(_throughput_doc(), _pipeline_doc())
    assert s["device"] == "NVIDIA H100 80GB HBM3"
    assert s["e2e_fps_960x540_to_3840x2160"] == 70.0
    assert s["e2e_fps_480x270_to_1920x1080"] == 200.0
    assert s["model_ms_paper_128_to_512_batch8"] == pytest.approx(4.0)
    assert s["e2e_over_model_ratio"] == pytest.approx(0.7)
    assert s["speed_over_animevideov3_960x540"] == pytest.approx(2.0)
    d = s["details"]
    assert (
        d["e2e_fps_960x540_to_3840x2160"]["met"] is True and d["e2e_fps_480x270_to_1920x1080"]["met"] is False
    )
    assert d["model_ms_paper_128_to_512_batch8"]["met"] is True and d["e2e_over_model_ratio"]["met"] is False
    assert d["e2e_fps_960x540_to_3840x2160"]["source"]["audio_copied"] is True
    assert d["model_ms_paper_128_to_512_batch8"]["source"]["batch"] == 8
    assert d["e2e_fps_480x270_to_1920x1080"]["target"]["value"] == 240
    assert all(f["conditions_hold"] for f in d.values())


def test_summary_is_null_with_a_reason_when_not_measured() -> None:
    tp = _throughput_doc("Intel(R) Xeon(R) Processor")
    tp["cases"][0] = {**tp["cases"][0], "status": "skipped", "reason": "estimated >= 90 s a call"}
    s = summary.summarize(tp, None)
    assert s["e2e_fps_960x540_to_3840x2160"] is None and s["e2e_over_model_ratio"] is None
    assert s["details"]["e2e_fps_960x540_to_3840x2160"]["reason"] == "no pipeline results given"
    paper = s["details"]["model_ms_paper_128_to_512_batch8"]
    assert paper["value"] is None and paper["met"] is None and "estimated >= 90 s a call" in paper["reason"]
    assert s["speed_over_animevideov3_960x540"] == pytest.approx(2.0)
    assert not s["details"]["speed_over_animevideov3_960x540"]["conditions_hold"]  # not an H100


def test_summary_cli_merges_runs_writes_json_and_refuses_mixed_devices(tmp_path: Path) -> None:
    tp = _throughput_doc()
    paper_only = {**tp, "cases": [c for c in tp["cases"] if c["model"] == "paper"]}
    rest = {**tp, "cases": [c for c in tp["cases"] if c["model"] != "paper"]}
    (tmp_path / "throughput_a.json").write_text(json.dumps(rest))
    (tmp_path / "throughput_b.json").write_text(json.dumps(paper_only))
    (tmp_path / "pipeline_a.json").write_text(json.dumps(_pipeline_doc()))
    args = [
        "--throughput",
        str(tmp_path / "throughput_a.json"),
        "--throughput",
        str(tmp_path / "throughput_b.json"),
    ]
    result = CliRunner().invoke(summary.main, [*args, "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["model_ms_paper_128_to_512_batch8"] == pytest.approx(4.0)  # from the second file
    assert s["speed_over_animevideov3_960x540"] == pytest.approx(2.0)  # from the first
    assert s["e2e_fps_960x540_to_3840x2160"] == 70.0 and s["sources"]["pipeline"].endswith("pipeline_a.json")
    assert len(s["sources"]["throughput"]) == 2
    (tmp_path / "pipeline_a.json").write_text(json.dumps(_pipeline_doc("Intel(R) Xeon(R) Processor")))
    result = CliRunner().invoke(summary.main, ["--results-dir", str(tmp_path)])
    assert result.exit_code != 0 and "different devices" in result.output


# --------------------------------------------------------------------------------------------- cpu_e2e
def test_cpu_e2e_summary_ratios_of_medians_and_per_round() -> None:
    from benchmarks import cpu_e2e

    runs = {
        "gtasr": [{"wall_s": t} for t in (10.0, 12.0, 11.0)],
        "realesr_animevideov3": [{"wall_s": t} for t in (30.0, 24.0, 33.0)],
    }
    s = cpu_e2e.summarise(runs, frames=24)
    assert s["gtasr"]["median_s"] == 11.0 and s["gtasr"]["fps"] == pytest.approx(24 / 11)
    assert s["gtasr"]["speed_vs_animevideov3"] == pytest.approx(30 / 11)
    assert s["gtasr"]["speed_vs_animevideov3_per_round"] == pytest.approx(3.0)  # median of 3, 2, 3
    assert s["realesr_animevideov3"]["speed_vs_animevideov3"] == 1


def test_cpu_step_times_the_generic_sampler_against_onestep(tmp_path: Path) -> None:
    from benchmarks import cpu_step

    args = ["--size", "64x32", "--batch", "1", "--pairs", "2", "--results-dir", str(tmp_path)]
    result = CliRunner().invoke(cpu_step.main, args)
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("cpu_step_*.json")
    doc = json.loads(path.read_text())
    assert set(doc["ms_per_frame"]) == {"generic", "onestep"} and doc["size"] == [64, 32]
    assert all(len(row["wall"]) == 2 and row["wall_median"] > 0 for row in doc["ms_per_frame"].values())
    assert doc["generic_over_onestep_median"] > 0


def test_peer_video_upscales_a_clip_frame_by_frame_keeping_audio(tmp_path: Path) -> None:
    """The peer's process: our decode and encode, bicubic in place of a network (no weights needed)."""
    from benchmarks import peer_video
    from benchmarks.clips import make_clip

    src = make_clip(tmp_path / "in.mp4", 32, 24, frames=3)
    dst = tmp_path / "out.mp4"
    result = CliRunner().invoke(peer_video.main, [str(src), str(dst), "--peer", "bicubic"])
    assert result.exit_code == 0, result.output
    with av.open(str(dst)) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (128, 96)
        assert c.streams.audio and sum(1 for _ in c.decode(video=0)) == 3


def test_sharpen_rows_put_each_amount_beside_bicubic(tmp_path: Path, tiny_weights: Path) -> None:
    """benchmarks.sharpen: every strength and real clip has a row per method; bicubic is the ratios'
    1.0; a stronger unsharp mask is sharper on the real clip; the JSON names the weights."""
    import numpy as np
    from media import make_clip
    from PIL import Image
    from safetensors.torch import save_file

    from benchmarks import sharpen
    from training.lpips import LPIPS

    (tmp_path / "val").mkdir()
    g = np.random.default_rng(0)
    photo = np.kron(g.integers(0, 256, (20, 20, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 160x160 blocks
    Image.fromarray(photo).save(tmp_path / "val" / "a.png")
    (tmp_path / "videos").mkdir()
    make_clip(tmp_path / "videos" / "c.mp4", frames=3)
    lpips = tmp_path / "lpips.safetensors"
    save_file({k: v.contiguous() for k, v in LPIPS().state_dict().items()}, str(lpips))
    out = tmp_path / "rows.json"
    args = ["--weights", str(tiny_weights), "--sharpen", "0,1", "--val", str(tmp_path / "val")]
    args += ["--videos", str(tmp_path / "videos"), "--lpips", str(lpips), "--frames", "2", "--size", "64"]
    args += ["--out", str(out)]
    result = CliRunner().invoke(sharpen.main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    groups = [f"video {s}" for s in ("light", "medium", "heavy")] + ["real c.mp4"]
    assert sorted(rows) == sorted(f"{g}: {m}" for g in groups for m in ("bicubic", "sharpen 0", "sharpen 1"))
    assert all(rows[f"{g}: bicubic"]["sharpness"] == 1.0 for g in groups)
    assert rows["real c.mp4: sharpen 1"]["sharpness"] > 1.05 * rows["real c.mp4: sharpen 0"]["sharpness"]
    assert doc["weights"] == str(tiny_weights) and doc["weights_sharpen_metadata"] is None
