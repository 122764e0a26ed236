"""CPU precision: bf16 autocast by default where the CPU computes bf16 natively, `--fp32` the exact path,
and the bf16 output of the shipped model within a stated PSNR of fp32 on real clips."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from gtasr_stream import Upscaler
from gtasr_stream.engines import device as device_mod
from gtasr_stream.engines.device import cpu_has_native_bf16
from gtasr_stream.model import sample_one_step
from gtasr_stream.model.onestep import OneStep

# bf16 vs fp32 of the shipped video model on 8-bit frames: measured 61.6-62.6 dB, max 1 code value,
# on bikes, vtest and carphone (AMX Xeon, benchmarks/results/cpu_quality_*.json). 50 dB is an RMS error
# of 0.8 code values: below what an 8-bit video shows, with room for other bf16 kernels (AVX512-BF16
# without AMX rounds in other places).
PSNR_FLOOR_DB = 50.0
MAX_CODE_DIFF = 8  # of 255, anywhere (the sharper video model of 2026-12-07: 5 measured on bikes)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_default_is_bf16_autocast_only_where_native(
    tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: native)
    up = Upscaler(weights=tiny_weights, device="cpu")
    assert up.dtype == (torch.bfloat16 if native else torch.float32)
    assert up.autocast is native
    assert next(up.model.parameters()).dtype == torch.float32  # autocast keeps float32 weights


def test_cpu_default_without_native_bf16_is_float32_onestep(
    tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where bf16 is emulated the default is float32 through OneStep: sample_one_step's numbers to
    float rounding. An explicit --fp32 stays on the generic sampler (next test)."""
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    up = Upscaler(weights=tiny_weights, device="cpu", noise="none")
    assert up.dtype == torch.float32 and not up.autocast and up.onestep
    assert not Upscaler(weights=tiny_weights, device="cpu", precision="fp32").onestep
    rgb = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = sample_one_step(up.model, rgb * 2 - 1, None).add(1).mul(0.5).clamp(0, 1)
        out = up(rgb)
        fast = OneStep(up.model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        assert torch.equal(out, fast(rgb * 2 - 1).add(1).mul(0.5).clamp(0, 1))  # OneStep ran
    assert (out - ref).abs().max() < 1e-5


def test_fp32_is_the_exact_path(tiny_weights: Path) -> None:
    """--fp32: float32 contiguous weights, no autocast: the one-step sampler's own numbers, bit for bit."""
    up = Upscaler(weights=tiny_weights, device="cpu", precision="fp32", noise="none")
    assert up.dtype == torch.float32 and not up.autocast
    rgb = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = sample_one_step(up.model, rgb * 2 - 1, None).add(1).mul(0.5).clamp(0, 1)
    assert torch.equal(up(rgb), ref)


def _frames(path: Path, indices: tuple[int, ...]) -> list[np.ndarray]:
    """RGB (h,w,3) uint8 frames at `indices` of a clip."""
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in indices:
                out.append(f.to_ndarray(format="rgb24"))
            if i >= max(indices):
                break
    return out


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has neither AMX nor AVX512-BF16")
def test_bf16_output_is_within_the_psnr_floor_of_fp32_on_real_clips(shared_data: Path) -> None:
    """The shipped video model, bf16 (the default here) against --fp32, on 8-bit output."""
    fp32 = Upscaler(device="cpu", precision="fp32", batch=1)
    bf16 = Upscaler(device="cpu", batch=1)
    assert bf16.dtype == torch.bfloat16
    videos = shared_data / "videos"
    clips = {"bikes.mp4": (60,), "vtest.avi": (400,), "carphone_pristine.mp4": (0,)}
    for name, indices in clips.items():
        for i, frame in zip(indices, _frames(videos / name, indices), strict=True):
            crop = frame[:144, :192]  # a corner keeps the test short; the benchmark runs whole frames
            x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255
            a = (fp32(x) * 255).round()
            b = (bf16(x) * 255).round()
            mse = ((a - b) ** 2).mean().item()
            psnr = 10 * np.log10(255**2 / mse) if mse else float("inf")
            diff = (a - b).abs().max().item()
            print(f"{name} frame {i}: bf16 vs fp32 PSNR {psnr:.2f} dB, max {diff:.0f} code values")
            assert mse > 0  # bf16 really ran (an identical output would mean fp32 twice)
            assert psnr >= PSNR_FLOOR_DB
            assert diff <= MAX_CODE_DIFF


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_cli_sets_a_passive_openmp_wait_policy_before_torch_loads(preset: str | None, expected: str) -> None:
    """libgomp reads OMP_WAIT_POLICY once, when torch is imported: the CLI must set it first."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import os, sys, gtasr_stream.cli; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "False"]


_REUSE = """
import resource, threading
import gtasr_stream.cli
import numpy as np

faults = []
def work():  # a thread, as the upscale stage is: blocks above glibc's largest mmap threshold
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        np.ones(6_000_000)  # 48 MB, touched, then freed
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
t = threading.Thread(target=work)
t.start()
t.join()
print(*faults)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
@pytest.mark.parametrize("user_set", [False, True])
def test_cli_keeps_freed_memory_for_the_next_frame_unless_the_user_set_malloc(user_set: bool) -> None:
    """A frame-sized block freed and allocated again is reused, not page-faulted in afresh (which cost
    the CPU path a quarter of its time); a MALLOC_* variable the user set is left to glibc."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    if user_set:
        env["MALLOC_ARENA_MAX"] = "8"
    out = subprocess.run([sys.executable, "-c", _REUSE], env=env, capture_output=True, text=True, check=True)
    first, *again = (int(v) for v in out.stdout.split())
    if user_set:
        assert min(again) > first / 2, out.stdout  # glibc's default: every block is faulted in afresh
    else:
        assert sum(again) < first / 2, out.stdout
