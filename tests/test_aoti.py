"""The AOTInductor backend: the compiled package against PyTorch at odd, portrait and tiny sizes, its
metadata and cache, `--backend auto` staying eager on the CPU, the one-line errors, and
`gtasr-stream --backend aoti` against `--backend torch` frame for frame on a real clip.

One CPU fp32 package of the tiny test model is compiled for the module (about a minute on 2 cores).
Skipped without a C++ compiler, which Inductor needs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import decode_frames, max_code_difference, run_cli
from test_real_clips import head

from gtasr_stream.engines.aoti_engine import (
    AotiStep,
    cached_package,
    compiler_available,
    package_cache_key,
)
from gtasr_stream.engines.onnx_engine import weights_sha256
from gtasr_stream.engines.upscaler import Upscaler
from gtasr_stream.errors import UserError
from gtasr_stream.model import ConsistencyModel, sample_one_step

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not compiler_available(), reason="AOTInductor needs a C++ compiler"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # torch.export's and Inductor's own deprecations
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def package(model: ConsistencyModel, cache_home: Path) -> Path:
    """The fp32 CPU package, compiled through the cache exactly as `--backend aoti` does."""
    messages: list[str] = []
    path = cached_package(model, torch.float32, CPU, cache_home / "gtasr-stream", messages.append)
    assert len(messages) == 1 and str(path) in messages[0]  # announced once
    assert cached_package(model, torch.float32, CPU, cache_home / "gtasr-stream", messages.append) == path
    assert len(messages) == 1  # the second call found it
    return path


@pytest.mark.parametrize("b,h,w", [(2, 37, 53), (1, 5, 40), (3, 64, 32), (1, 33, 17), (2, 1, 1)])
def test_package_matches_pytorch(model: ConsistencyModel, package: Path, b: int, h: int, w: int) -> None:
    """Padding happens around the package on the device; any size gives sample_one_step's numbers."""
    step = AotiStep(package, CPU)
    assert step.dtype == torch.float32 and step.multiple == model.multiple  # from the metadata
    g = torch.Generator().manual_seed(h * 100 + w)
    lq = torch.rand(b, 3, h, w, generator=g) * 2 - 1
    eps = torch.randn(1, 3, 4 * h, 4 * w, generator=g)
    with torch.inference_mode():
        for e in (eps, None):  # one eps for the batch (--noise fixed), and no noise
            got, ref = step(lq, e), sample_one_step(model, lq, e)
            assert got.shape == ref.shape == (b, 3, 4 * h, 4 * w)
            assert (got - ref).abs().max().item() < 1e-4


def test_cache_key_changes_with_each_ingredient(model: ConsistencyModel) -> None:
    sha = weights_sha256(model)
    base = package_cache_key(sha, torch.float16, "cuda-sm90-NVIDIA H100", "2.13.0")
    variants = [
        package_cache_key("0" * 64, torch.float16, "cuda-sm90-NVIDIA H100", "2.13.0"),
        package_cache_key(sha, torch.bfloat16, "cuda-sm90-NVIDIA H100", "2.13.0"),
        package_cache_key(sha, torch.float16, "cuda-sm80-NVIDIA A100", "2.13.0"),
        package_cache_key(sha, torch.float16, "cuda-sm90-NVIDIA H100", "2.14.0"),
    ]
    assert base == package_cache_key(sha, torch.float16, "cuda-sm90-NVIDIA H100", "2.13.0")
    assert len({base, *variants}) == 5 and base.startswith("gtasr-fp16-")


def test_auto_stays_eager_on_the_cpu_even_with_a_cached_package(
    tiny_weights: Path, package: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AOTInductor is slower than eager on the CPU (benchmarks/results/throughput_cpu-2t_*.json)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    up = Upscaler(weights=tiny_weights, device="cpu")
    assert up.backend == "torch" and up.backend_note == "fastest on the CPU"
    assert Upscaler(weights=tiny_weights, device="cpu", backend="aoti").backend == "aoti"  # opt-in, cached


def test_errors_are_one_line(tiny_weights: Path, package: Path, tmp_path: Path) -> None:
    not_a_package = tmp_path / "x.pt2"
    not_a_package.write_bytes(b"not a zip")
    cases = [
        (dict(backend="torch", pt2=package), "--pt2 PATH needs --backend aoti"),
        (dict(backend="aoti", pt2=tmp_path / "missing.pt2"), "no such file"),
        (dict(backend="aoti", pt2=not_a_package), "not a loadable AOTInductor package"),
        (dict(backend="aoti", pt2=package, precision="bf16"), "is a float32 package"),
    ]
    for kw, expected in cases:
        with pytest.raises(UserError, match=expected) as info:
            Upscaler(weights=tiny_weights, device="cpu", **kw)
        assert "\n" not in str(info.value)


def test_a_stale_package_is_one_line_of_ours(tiny_weights: Path, tmp_path: Path) -> None:
    """A .pt2 in an older torch's layout (no folder prefix, no compiled model): torch's own loader logs
    'Loading outdated pt2 file' and its C++ side prints a warning; the user sees our line alone."""
    import zipfile

    from media import make_clip

    stale = tmp_path / "old.pt2"
    with zipfile.ZipFile(stale, "w") as z:
        z.writestr("archive_format", "pt2")
        z.writestr("data/aotinductor/model/model.cpp", "// from another torch")
    clip = make_clip(tmp_path / "in.mkv", width=32, height=32, frames=1).path
    r = run_cli(clip, tmp_path / "out.mkv", "--weights", tiny_weights, "--backend", "aoti", "--pt2", stale)
    lines = [line for line in r.stderr.decode().splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr.decode()
    assert lines[0].startswith(f"gtasr-stream: error: {stale}: not a loadable AOTInductor package")
    assert "compiled again: gtasr-export --pt2" in lines[0]
    assert not (tmp_path / "out.mkv").exists()


def test_a_package_of_another_torch_version_is_said_once(
    package: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A package that loads but was compiled by another torch runs, with one warning of ours."""
    said: list[str] = []
    AotiStep(package, CPU, said.append)
    assert said == []  # compiled by this torch: nothing to say
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    AotiStep(package, CPU, said.append)
    assert len(said) == 1 and "compiled by torch" in said[0] and "this is torch 0.0.0" in said[0]
    assert "outdated" not in capfd.readouterr().err


def test_gtasr_stream_backend_aoti_matches_torch_on_a_real_clip(
    tmp_path: Path, shared_data: Path, tiny_weights: Path, package: Path, cache_home: Path
) -> None:
    """Lossless output, so only the model's numbers can differ: at most one 8-bit code value."""
    clip = head(shared_data / "videos" / "carphone_pristine.mp4", tmp_path / "in.mp4", 4)
    before = sorted(os.listdir(package.parent))
    decoded = {}
    for name, args in {
        "torch": ["--backend", "torch"],
        "aoti": ["--backend", "aoti", "--pt2", package],
    }.items():
        out = tmp_path / f"{name}.mkv"
        r = run_cli(clip, out, "--weights", tiny_weights, "-c", "ffv1", "-b", "2", *args)
        assert r.returncode == 0, r.stderr.decode()
        assert f"({name})" in r.stderr.decode()
        decoded[name] = decode_frames(out)
    assert sorted(os.listdir(package.parent)) == before
    ref, got = decoded["torch"], decoded["aoti"]
    assert len(ref) == 4
    diff = max_code_difference(got, ref)
    print(f"--backend aoti vs torch: max difference {diff} (8-bit code values)")
    assert diff <= 1


def test_a_copied_package_runs_without_the_model_code(package: Path, tmp_path: Path) -> None:
    """What a deployer gets: the .pt2 alone, loaded through torch only."""
    alone = Path(shutil.copy(package, tmp_path / "gtasr.pt2"))
    runner = torch._inductor.aoti_load_package(str(alone))
    meta = runner.get_metadata()
    m = int(meta["gtasr_multiple"])
    lq = torch.rand(1, 3, m, 2 * m) * 2 - 1
    with torch.inference_mode():
        hr = runner(lq, torch.zeros(1, 3, 4 * m, 8 * m))
    hr = hr[0] if isinstance(hr, (list, tuple)) else hr
    assert hr.shape == (1, 3, 4 * m, 8 * m) and hr.abs().max() <= 1


def test_gtasr_export_pt2_writes_and_checks_a_package(
    tiny_weights: Path, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's wiring and its check on a real package (the module's, not compiled again)."""
    pytest.importorskip("onnxscript", reason="gtasr-export writes the ONNX graph first")
    from click.testing import CliRunner

    from export.cli import main as export_main

    calls: list[tuple[Path, torch.dtype, torch.device]] = []

    def reuse(model: ConsistencyModel, path: Path, *, dtype: torch.dtype, device: torch.device) -> Path:
        calls.append((path, dtype, device))
        return Path(shutil.copy(package, path))

    monkeypatch.setattr("gtasr_stream.engines.aoti_engine.compile_package", reuse)
    args = ["--weights", tiny_weights, "--out", tmp_path, "--onnx-only", "--pt2", "--device", "cpu"]
    args += ["--min-shape", "1x9x17", "--opt-shape", "2x33x21", "--max-shape", "2x40x64"]
    result = CliRunner().invoke(export_main, [str(a) for a in args])
    print(result.output)
    assert result.exit_code == 0, result.output
    assert [(c[0].parent, c[0].suffix, c[1], c[2]) for c in calls] == [(tmp_path, ".pt2", torch.float32, CPU)]
    assert "checked the package: max |pt2 - torch|" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.fp32.cpu.pt2", "tiny.fp32.onnx"]


def test_gtasr_export_pt2_that_cannot_be_checked_is_not_written(
    tiny_weights: Path, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-shape past any address space (211 TB): the package is compiled but cannot be checked
    there; one line naming the shape, exit 1, no unchecked package (nor its temporary) left in OUT."""
    from click.testing import CliRunner

    from export.cli import main as export_main

    def stand_in(model: ConsistencyModel, path: Path, **kw: object) -> Path:
        path.write_bytes(b"graph")  # the ONNX side is test_export's: here it passes untouched
        return path

    monkeypatch.setattr("export.onnx_export.export_onnx", stand_in)
    monkeypatch.setattr("export.onnx_export.check_onnx", lambda *a, **kw: 0.0)
    monkeypatch.setattr(
        "gtasr_stream.engines.aoti_engine.compile_package",
        lambda model, path, **kw: Path(shutil.copy(package, path)),
    )
    huge = "1x4194304x4194304"
    args = ["--weights", tiny_weights, "--out", tmp_path, "--onnx-only", "--pt2", "--device", "cpu"]
    result = CliRunner().invoke(export_main, [str(a) for a in [*args, "--max-shape", huge]])
    print(result.output)
    assert result.exit_code == 1 and f"cannot be checked at {huge}" in result.output, result.output
    assert str(tmp_path / "tiny.fp32.cpu.pt2") in result.output and ".partial" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.fp32.onnx"]
