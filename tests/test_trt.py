"""The TensorRT backend: profiles and tiles for landscape, portrait, odd and huge frames (checked
against what tiling.run_tiled cuts), the engine cache key, the build plumbing against a stand-in
`tensorrt` module, and, where TensorRT and CUDA exist (`trt` mark), a real engine against PyTorch.

Everything but the `trt` tests runs on the CPU without TensorRT.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from gtasr_stream.engines import trt_engine
from gtasr_stream.engines.tiling import run_tiled
from gtasr_stream.engines.trt_engine import (
    MAX_ELEMENTS,
    TRT_MISSING,
    Profile,
    cached_engine,
    engine_cache_key,
    file_sha256,
    import_trt,
    profile_for,
    trt_available,
)
from gtasr_stream.engines.trt_profile import profile_from_flags
from gtasr_stream.errors import UserError
from gtasr_stream.model import PRESETS

TINY = {"multiple": PRESETS["tiny"].multiple, "hr_channels": PRESETS["tiny"].head_channels}  # 32, 16


def widest(b: int, h: int, w: int, multiple: int = 1, hr_channels: int = 3) -> int:
    """The graph's widest tensor, counted here independently of trt_engine: hr_channels at 4x the
    LR size padded to the multiple (with the defaults: the output hr, B*3*4h*4w)."""
    hp, wp = (h + multiple - 1) // multiple * multiple, (w + multiple - 1) // multiple * multiple
    return b * hr_channels * 4 * hp * 4 * wp


def tiles_cut(h: int, w: int, tile: int, pad: int) -> set[tuple[int, int, int]]:
    """(B, h, w) of every tile run_tiled hands its step for one h x w frame (on the meta device: no
    memory, so a 34560x61440 output costs nothing)."""
    cut: set[tuple[int, int, int]] = set()

    def step(lq: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        b, c, th, tw = lq.shape
        cut.add((b, th, tw))
        return lq.new_empty(b, c, 4 * th, 4 * tw)

    run_tiled(step, torch.empty(1, 3, h, w, device="meta"), None, tile, pad)
    return cut


# ---------------------------------------------------------------- TensorRT missing


def test_import_trt_without_tensorrt_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if not installed, also where it is
    with pytest.raises(UserError) as info:
        import_trt()
    assert str(info.value) == TRT_MISSING == "--backend trt needs TensorRT: pip install gtasr-stream[trt]"
    assert trt_available() is False
    with pytest.raises(UserError, match=re.escape(TRT_MISSING)):
        cached_engine(Path("g.onnx"), "a" * 64, "fp16", Profile((1, 8, 8), (1, 8, 8), (1, 8, 8)), Path("."))


# ---------------------------------------------------------------- profiles


@pytest.mark.parametrize(
    ("h", "w"),
    [(1080, 1920), (1920, 1080), (541, 961), (1, 1)],  # landscape, portrait, odd, one pixel
)
def test_profile_for_whole_frames_fixes_the_size_and_fits_the_batch(h: int, w: int) -> None:
    for kw in ({}, TINY):
        profile, tile = profile_for(8, h, w, **kw)
        b = profile.max[0]
        print(f"{w}x{h} {kw or 'hr only'}: profile {profile}, tile {tile}")
        assert tile == 0
        assert profile.min == (1, h, w) and profile.opt == profile.max == (b, h, w)
        # the largest batch up to 8 whose tensors fit TensorRT's limit
        assert widest(b, h, w, **kw) <= MAX_ELEMENTS
        assert b == 8 or widest(b + 1, h, w, **kw) > MAX_ELEMENTS
        hr = profile.shapes("eps")[2]  # the largest eps, and hr, its shape
        assert hr == (b, 3, 4 * h, 4 * w) and hr[0] * hr[1] * hr[2] * hr[3] <= MAX_ELEMENTS
        assert profile.shapes("lq") == ((1, 3, h, w), (b, 3, h, w), (b, 3, h, w))


def test_profile_for_lowers_the_batch_where_tensors_would_not_fit() -> None:
    # 1080p: hr is 99.5 M elements a frame (21 fit); tiny's head, 16 channels at 1088x1920 padded,
    # 535 M (4 fit)
    assert profile_for(32, 1080, 1920)[0].max == (21, 1080, 1920)
    assert profile_for(32, 1080, 1920, **TINY)[0].max == (4, 1080, 1920)
    assert profile_for(3, 1080, 1920, **TINY)[0].max == (3, 1080, 1920)  # no more than asked
    assert profile_for(32, 541, 961, **TINY)[0].max == (15, 541, 961)  # padded to 544x992; 16 unpadded


@pytest.mark.parametrize("kw", [{}, TINY], ids=["hr only", "tiny preset"])
def test_profile_for_huge_frames_tiles_and_covers_exactly_what_run_tiled_cuts(kw: dict[str, int]) -> None:
    h, w = 8640, 15360  # LR; the 4x output alone has 6.4 G elements
    profile, tile = profile_for(4, h, w, **kw)
    print(f"{w}x{h} {kw or 'hr only'}: tile {tile}, profile {profile}")
    assert tile >= 32 and tile % 8 == 0
    assert profile.max[0] == profile.opt[0] == profile.min[0] == 1
    # the largest tile whose biggest tile fits: with 8 px more, run_tiled would cut one that does not
    cut = tiles_cut(h, w, tile, 16)
    assert max(widest(*s, **kw) for s in cut) <= MAX_ELEMENTS
    assert max(widest(*s, **kw) for s in tiles_cut(h, w, tile + 8, 16)) > MAX_ELEMENTS
    assert all(profile.covers(s) for s in cut)
    assert profile.min == tuple(min(s[i] for s in cut) for i in range(3))
    assert profile.max == profile.opt == tuple(max(s[i] for s in cut) for i in range(3))


@pytest.mark.parametrize(
    ("h", "w", "pad"),
    [(300, 200, 16), (97, 1000, 16), (40, 5000, 16), (1001, 333, 8), (250, 250, 0)],
)
def test_profile_for_small_limits_tiles_portrait_odd_and_thin_frames(h: int, w: int, pad: int) -> None:
    """A small limit makes ordinary sizes "huge": first/last tiles, interior tiles and sides no longer
    than a tile (40 x 5000) all fall inside the profile, and its bounds are tiles that occur."""
    limit = widest(1, 100, 100)
    profile, tile = profile_for(2, h, w, tile_pad=pad, max_elements=limit)
    cut = tiles_cut(h, w, tile, pad)
    print(f"{w}x{h} pad {pad}: tile {tile}, profile {profile}, {len(cut)} tile shapes")
    assert tile >= 32 and tile % 8 == 0 and widest(*profile.max) <= limit
    assert max(widest(*s) for s in tiles_cut(h, w, tile + 8, pad)) > limit  # the largest tile that fits
    assert all(profile.covers(s) for s in cut)
    assert profile.min == tuple(min(s[i] for s in cut) for i in range(3))
    assert profile.max == tuple(max(s[i] for s in cut) for i in range(3))


def test_profile_for_rejects_what_no_tile_fixes() -> None:
    with pytest.raises(ValueError, match="even 32-px tiles"):
        profile_for(1, 500, 500, max_elements=widest(1, 40, 40))
    with pytest.raises(ValueError, match="batch 0"):
        profile_for(0, 8, 8)


def test_profile_from_flags_checks_order_and_form() -> None:
    p = profile_from_flags([1, 9, 17], (2, 33, 21), (2, 40, 64))
    assert p == Profile((1, 9, 17), (2, 33, 21), (2, 40, 64))
    assert str(p) == "1x9x17 to 2x40x64 (opt 2x33x21)"
    assert p.covers((1, 40, 17)) and not p.covers((3, 33, 21)) and not p.covers((1, 8, 64))
    bad = [
        (((2, 32, 32), (1, 64, 64), (2, 64, 64)), "min <= opt <= max"),  # batch min > opt
        (((1, 32, 32), (1, 48, 64), (2, 64, 48)), "min <= opt <= max"),  # width opt > max
        (((1, 0, 32), (1, 32, 32), (1, 32, 32)), "three positive integers"),
        (((1, 32), (1, 32, 32), (1, 32, 32)), "three positive integers"),
    ]
    for shapes, expected in bad:
        with pytest.raises(ValueError, match=re.escape(expected)) as info:
            profile_from_flags(*shapes)
        print(info.value)
    with pytest.raises(ValueError, match="lq and eps"):
        p.shapes("hr")


# ---------------------------------------------------------------- the cache key


def test_engine_cache_key_changes_with_each_ingredient(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "onnx_sha256": "a" * 64,
        "weights_sha256": "b" * 64,
        "precision": "fp16",
        "profile": Profile((1, 540, 960), (4, 540, 960), (4, 540, 960)),
        "trt_version": "10.13.3.9",
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "compute_capability": (9, 0),
        "workspace": 4 << 30,
    }
    variants = {
        "onnx_sha256": "c" * 64,
        "weights_sha256": "d" * 64,
        "precision": "fp32",
        "profile": Profile((1, 540, 960), (2, 540, 960), (4, 540, 960)),  # only opt differs
        "trt_version": "10.14.1.48",
        "gpu_name": "NVIDIA H200",
        "compute_capability": (8, 9),
        "workspace": 2 << 30,
    }
    key = engine_cache_key(**base)
    assert re.fullmatch(r"gtasr-fp16-[0-9a-f]{24}", key), key
    assert engine_cache_key(**dict(base)) == key  # stable
    keys = {name: engine_cache_key(**{**base, name: value}) for name, value in variants.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(variants), keys
    with pytest.raises(ValueError, match="fp32, fp16, bf16"):
        engine_cache_key(**{**base, "precision": "int8"})

    data = bytes(range(256)) * 12_000  # 3 MB: more than one read
    (tmp_path / "g.onnx").write_bytes(data)
    assert file_sha256(tmp_path / "g.onnx") == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- the build, against a stand-in


def fake_tensorrt(calls: list[tuple[Any, ...]], *, parse_ok: bool = True, build_ok: bool = True) -> Any:
    """A stand-in `tensorrt` with the calls build_engine makes (names as in the TensorRT 10 API);
    it records them, and logs and fails the way the real one reports failures."""
    trt: Any = types.ModuleType("tensorrt")
    trt.__version__ = "10.99.0"

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self) -> None:
            pass

    class Config:
        def __init__(self) -> None:
            self.cache = b""

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            calls.append(("workspace", pool, size))

        def create_timing_cache(self, data: bytes) -> bytes:
            return bytes(data)

        def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> bool:
            calls.append(("timing cache in", cache))
            self.cache = cache
            return True

        def get_timing_cache(self) -> Any:
            return types.SimpleNamespace(serialize=lambda: self.cache + b"+tactics")

        def add_optimization_profile(self, profile: dict[str, Any]) -> int:
            calls.append(("profile", profile))
            return 0

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse", Path(path).name))
            return parse_ok

        def get_error(self, i: int) -> Any:
            return types.SimpleNamespace(desc=lambda: "In node 7 (Resize): unsupported mode")

    class OptimizationProfile(dict[str, Any]):
        def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:
            self[name] = (min, opt, max)

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> str:
            calls.append(("network flags", flags))
            return "network"

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> OptimizationProfile:
            return OptimizationProfile()

        def build_serialized_network(self, network: str, config: Config) -> bytes | None:
            if build_ok:
                return b"engine bytes"
            self.logger.log(ILogger.Severity.ERROR, "out of memory: workspace too small")
            return None

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, Parser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=3)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace pool")
    return trt


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Install a stand-in tensorrt (fresh logger too) on a pretend GPU; returns a factory."""

    def install(**kw: bool) -> list[tuple[Any, ...]]:
        calls: list[tuple[Any, ...]] = []
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, **kw))
        trt_engine._logger.cache_clear()
        return calls

    monkeypatch.setattr(trt_engine, "_gpu", lambda: ("Pretend GPU", (9, 0)))
    yield install
    trt_engine._logger.cache_clear()


def test_cached_engine_builds_once_and_keeps_the_timing_cache(stand_in: Any, tmp_path: Path) -> None:
    calls = stand_in()
    onnx = tmp_path / "tiny.fp16.onnx"
    onnx.write_bytes(b"graph")
    cache = tmp_path / "cache"
    profile = Profile((1, 9, 17), (2, 33, 21), (2, 40, 64))
    messages: list[str] = []
    path = cached_engine(onnx, "w" * 64, "fp16", profile, cache, 1 << 30, messages.append)
    assert re.fullmatch(r"gtasr-fp16-[0-9a-f]{24}\.engine", path.name) and path.parent == cache
    assert path.read_bytes() == b"engine bytes"
    assert len(messages) == 1 and str(path) in messages[0] and "1x9x17 to 2x40x64" in messages[0]
    assert ("network flags", 1 << 3) in calls  # strongly typed, nothing else
    assert ("workspace", "workspace pool", 1 << 30) in calls and ("parse", onnx.name) in calls
    (timing,) = [p for p in cache.iterdir() if p.suffix == ".cache"]
    assert ("timing cache in", b"") in calls and timing.read_bytes() == b"+tactics"
    ((_, trt_profile),) = [c for c in calls if c[0] == "profile"]
    assert trt_profile == {
        "lq": ((1, 3, 9, 17), (2, 3, 33, 21), (2, 3, 40, 64)),
        "eps": ((1, 3, 36, 68), (2, 3, 132, 84), (2, 3, 160, 256)),
    }

    # the same again: found, not built, not announced
    calls.clear()
    assert cached_engine(onnx, "w" * 64, "fp16", profile, cache, 1 << 30, messages.append) == path
    assert calls == [] and len(messages) == 1
    # another profile: a new engine, built on the saved timing cache
    other = Profile((1, 9, 17), (1, 9, 17), (1, 9, 17))
    assert cached_engine(onnx, "w" * 64, "fp16", other, cache, 1 << 30, messages.append) != path
    assert ("timing cache in", b"+tactics") in calls and timing.read_bytes() == b"+tactics+tactics"
    assert sorted(p.suffix for p in cache.iterdir()) == [".cache", ".engine", ".engine"]  # no leftovers


def test_build_failures_are_one_line_user_errors(stand_in: Any, tmp_path: Path) -> None:
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"graph")
    profile = Profile((1, 8, 8), (1, 8, 8), (1, 8, 8))
    for kw, expected in [
        ({"parse_ok": False}, "TensorRT cannot parse this graph (In node 7 (Resize): unsupported mode)"),
        ({"build_ok": False}, "for inputs 1x8x8 to 1x8x8 (opt 1x8x8) (out of memory: workspace too small)"),
    ]:
        stand_in(**kw)
        with pytest.raises(UserError, match=re.escape(expected)) as info:
            cached_engine(onnx, "w" * 64, "fp32", profile, tmp_path / "cache", 1 << 30)
        print(info.value)
        assert "\n" not in str(info.value)
        assert not any(p.suffix == ".engine" or "partial" in p.name for p in (tmp_path / "cache").iterdir())


# ---------------------------------------------------------------- real TensorRT (skipped without it)

needs_trt = pytest.mark.skipif(
    not trt_available(), reason="needs TensorRT and a CUDA device: pip install gtasr-stream[trt]"
)


@pytest.fixture(scope="module")
def fp16_onnx(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxscript", reason="exporting needs onnx and onnxscript")
    from gtasr_stream.engines.onnx_engine import export_onnx
    from gtasr_stream.model import ConsistencyModel
    from gtasr_stream.weights import load_weights

    net, _ = load_weights(tiny_weights)
    path = tmp_path_factory.mktemp("onnx") / "tiny.fp16.onnx"
    return export_onnx(ConsistencyModel(net).eval(), path, opset=None, dtype=torch.float16, dynamic=True)


@pytest.mark.trt
@needs_trt
def test_trt_engine_matches_pytorch_and_is_cached(
    fp16_onnx: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    from export.onnx_export import TOLERANCE
    from gtasr_stream.engines.onnx_engine import weights_sha256
    from gtasr_stream.engines.trt_engine import TrtStep
    from gtasr_stream.model import ConsistencyModel, sample_one_step
    from gtasr_stream.weights import load_weights

    net, _ = load_weights(tiny_weights)
    model = ConsistencyModel(net).eval()  # the fp32 CPU reference
    profile = profile_from_flags((1, 1, 1), (2, 33, 21), (3, 64, 64))
    messages: list[str] = []
    path = cached_engine(
        fp16_onnx, weights_sha256(model), "fp16", profile, tmp_path, 1 << 30, messages.append
    )
    assert sum("building" in m for m in messages) == 1, messages
    step = TrtStep(path, torch.device("cuda"), print)
    assert step.dtype == torch.float16 and step.profile == profile  # strongly typed: the graph's fp16

    g = torch.Generator().manual_seed(3)
    for b, h, w in [(2, 37, 53), (1, 5, 40), (3, 64, 32), (1, 33, 17), (2, 1, 1)]:
        lq = torch.rand(b, 3, h, w, generator=g) * 2 - 1
        for eps in (torch.randn(b, 3, 4 * h, 4 * w, generator=g), torch.randn(1, 3, 4 * h, 4 * w), None):
            with torch.inference_mode():
                ref = sample_one_step(model, lq, eps)
                out = step(lq.cuda(), None if eps is None else eps.cuda())
            assert out.device.type == "cuda" and out.dtype == torch.float16 and out.shape == ref.shape
            diff = (out.float().cpu() - ref).abs()
            print(
                f"TensorRT fp16 vs PyTorch fp32 at {b}x{h}x{w}: max {diff.max():.3g}, mean {diff.mean():.3g}"
            )
            assert diff.max().item() <= TOLERANCE[torch.float16]
    with pytest.raises(
        UserError, match=re.escape("takes inputs 1x1x1 to 3x64x64 (opt 2x33x21) (BxHxW), got 4x8x8")
    ):
        step(torch.zeros(4, 3, 8, 8, device="cuda"), None)

    before = path.stat().st_mtime_ns
    again = cached_engine(
        fp16_onnx, weights_sha256(model), "fp16", profile, tmp_path, 1 << 30, messages.append
    )
    assert again == path and path.stat().st_mtime_ns == before
    assert sum("building" in m for m in messages) == 1


@pytest.mark.trt
@needs_trt
def test_trt_step_makes_the_engines_a_stream_needs(
    fp16_onnx: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole frames, frames too large for TensorRT (the limit lowered to make 64x96 "huge": trt_step
    tiles them with 32-px tiles), and Upscaler tiles, against Upscaler on PyTorch fp16 tiling alike."""
    from gtasr_stream.engines.trt_engine import trt_step
    from gtasr_stream.engines.upscaler import Upscaler

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    frames = torch.rand(3, 3, 64, 96, generator=torch.Generator().manual_seed(4)).cuda()
    cases = [(MAX_ELEMENTS, 0, 0), (widest(1, 48, 48, 32, 16), 0, 32), (MAX_ELEMENTS, 32, 32)]
    for limit, tile, ref_tile in cases:
        monkeypatch.setattr(trt_engine, "MAX_ELEMENTS", limit)
        ref = Upscaler(weights=tiny_weights, device="cuda", precision="fp16", batch=2, tile=ref_tile)
        up = Upscaler(weights=tiny_weights, device="cuda", precision="fp16", batch=2, tile=tile)
        step = trt_step(
            up.model,
            fp16_onnx,
            up.device,
            up.dtype,
            up.warn,
            batch=up.batch,
            tile_pad=up.tile_pad,
            current_tile=lambda up=up: up.tile,
        )
        up.step = step
        diff = (up(frames) - ref(frames)).abs().max().item()
        print(
            f"limit {limit}, --tile {tile}: max |trt - torch| = {diff:.3g} in [0,1]; engines {list(step.engines)}"
        )
        assert diff <= 1e-2 and len(step.engines) == 1


def test_gtasr_stream_backend_trt_without_tensorrt_is_one_line(tmp_path: Path, tiny_weights: Path) -> None:
    """Asked for by name, a missing runtime is an error saying what to install, never a fallback."""
    from conftest import run_cli
    from media import make_clip

    if trt_engine.trt_available():
        pytest.skip("TensorRT is installed here")
    clip = make_clip(tmp_path / "in.mkv", frames=2, width=32, height=24)
    out = tmp_path / "out.mkv"
    r = run_cli(clip.path, out, "--weights", tiny_weights, "--backend", "trt")
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and not out.exists()
    expected = "pip install gtasr-stream[trt]" if importlib.util.find_spec("tensorrt") is None else "CUDA"
    assert (
        len(lines) == 1 and lines[0].startswith("gtasr-stream: error: --backend trt") and expected in lines[0]
    )
