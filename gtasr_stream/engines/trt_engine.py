"""The TensorRT backend: engines built from the ONNX sampler graph, their cache, and a TensorRT step.

`build_engine` turns the graph of `onnx_engine.export_onnx` into an engine for one profile (the
profiles and tiles are `trt_profile`'s); `cached_engine` keeps one engine per graph, weights,
precision, profile, TensorRT version, GPU and workspace (the ingredients of `engine_cache_key`, as
vs-mlrt names its engines); `TrtStep` runs one engine, inputs and output staying on the GPU;
`trt_step` builds the step of `--backend trt`, which makes the engines a stream needs at its first
batch; `trt_available` is what `--backend auto` asks.

Decisions:
- Strongly typed networks (NetworkDefinitionCreationFlag.STRONGLY_TYPED): every tensor keeps the
  ONNX graph's type, so an fp16 graph gives an fp16 engine and an fp32 graph an fp32 one, the same
  numbers `gtasr-export --check` validated with onnxruntime.  No FP16/BF16 builder flags, which
  would let TensorRT choose a precision per layer and make the result depend on the GPU.  (TensorRT
  11 is always strongly typed and ignores the flag.)
- Profiles and tiling: see `trt_profile` (one fixed-size profile per stream; frames too large for
  TensorRT's 2^31 - 1 element limit are tiled).

Status: TensorRT cannot be installed on the machines this was written on (no GPU).  Every TensorRT
call follows the TensorRT 10 Python API documentation and NVIDIA's samples, and its name was checked
in the 10.13 and 11.4 bindings, but the code has NOT been run against TensorRT.  The pure parts
(profiles, tiles, cache keys) are tested on the CPU; tests/test_trt.py's `trt` tests build and run
an engine where TensorRT and CUDA are present.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..files import atomic_path
from ..model import SCALE, ConsistencyModel
from .onnx_engine import PRECISIONS, cached_onnx, default_cache_dir, weights_sha256
from .tiling import run_tiled
from .trt_profile import MAX_ELEMENTS, Profile, _elements, profile_for

TRT_MISSING = "--backend trt needs TensorRT: pip install gtasr-stream[trt]"
ENGINE_VERSION = 1  # part of the cache key: bump when build_engine changes what it builds
DEFAULT_WORKSPACE = 4 << 30  # bytes of scratch GPU memory TensorRT's tactics may use
ALIGNMENT = 256  # bytes: TensorRT's required alignment of every input and output address


def import_trt() -> Any:
    """The `tensorrt` module, or a UserError saying how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise UserError(TRT_MISSING) from None
    except OSError as e:  # the package is there but its libraries (libnvinfer) did not load
        raise UserError(f"TensorRT is installed but does not load ({e}); reinstall gtasr-stream[trt]") from e
    return tensorrt


def trt_available() -> bool:
    """TensorRT importable and a CUDA device present: what the `trt` tests and `--backend auto` need."""
    try:
        import_trt()
    except UserError:
        return False
    return torch.cuda.is_available()


# ---------------------------------------------------------------- the cache of engines


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def engine_cache_key(
    *,
    onnx_sha256: str,
    weights_sha256: str,
    precision: str,
    profile: Profile,
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    workspace: int,
) -> str:
    """File stem of a cached engine: an engine is only valid for exactly these, so all go in."""
    if precision not in PRECISIONS.values():
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS.values())}, got {precision!r}")
    ingredients = (
        f"{onnx_sha256}|{weights_sha256}|{precision}|{profile!r}|{trt_version}|{gpu_name}|"
        f"{compute_capability}|{workspace}|engine{ENGINE_VERSION}"
    )
    return f"gtasr-{precision}-{hashlib.sha256(ingredients.encode()).hexdigest()[:24]}"


def _gpu() -> tuple[str, tuple[int, int]]:
    """Name and compute capability of the current CUDA device, which TensorRT builds for."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return props.name, (props.major, props.minor)


def cached_engine(
    onnx_path: Path,
    weights_sha256: str,
    precision: str,
    profile: Profile,
    cache_dir: Path,
    workspace_bytes: int = DEFAULT_WORKSPACE,
    on_build: Callable[[str], None] = lambda msg: None,
) -> Path:
    """The engine of `onnx_path` for `profile` on the current CUDA device, in `cache_dir`; built (and
    announced, with TensorRT's warnings, through `on_build`) only when absent.  One timing cache per
    TensorRT version and GPU sits beside the engines and makes rebuilds for new profiles faster."""
    trt = import_trt()
    gpu_name, capability = _gpu()
    key = engine_cache_key(
        onnx_sha256=file_sha256(onnx_path),
        weights_sha256=weights_sha256,
        precision=precision,
        profile=profile,
        trt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        workspace=workspace_bytes,
    )
    path = cache_dir / f"{key}.engine"
    if path.is_file():
        return path
    on_build(f"building a TensorRT engine for inputs {profile} once (minutes), cached as {path}")
    machine = hashlib.sha256(f"{trt.__version__}|{gpu_name}|{capability}".encode()).hexdigest()[:16]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return build_engine(
            onnx_path,
            path,
            profile,
            workspace_bytes=workspace_bytes,
            timing_cache_path=cache_dir / f"timing-{machine}.cache",
            log=on_build,
        )
    except OSError as e:
        raise UserError(f"cannot write the TensorRT cache in {cache_dir} ({e.strerror or e})") from e


# ---------------------------------------------------------------- building


@functools.cache
def _logger() -> Any:
    """One TensorRT logger for the process (TensorRT wants its builders and runtimes to share one):
    each distinct warning goes to `sink` once, errors are kept for our one-line messages."""
    trt = import_trt()
    base: Any = trt.ILogger  # tensorrt has no type stubs
    severity = base.Severity

    class Logger(base):
        def __init__(self) -> None:
            base.__init__(self)  # the documented way to subclass ILogger
            self.sink: Callable[[str], None] = lambda msg: None
            self.errors: list[str] = []
            self.seen: set[str] = set()

        def log(self, level: Any, msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(msg)
            elif level == severity.WARNING and msg not in self.seen:
                self.seen.add(msg)
                self.sink(f"TensorRT: {msg}")

        def reason(self) -> str:
            return self.errors[0] if self.errors else "TensorRT gave no reason"

    return Logger()


def _timing_cache(config: Any, path: Path | None, log: Callable[[str], None]) -> None:
    """Attach the timing cache saved at `path` to `config`, or a new one."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    if data:
        try:
            cache = config.create_timing_cache(data)
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                return
        except Exception:  # a corrupt or foreign cache only costs build time: never worth failing for
            pass
        log(f"TensorRT: ignoring the timing cache {path} (another GPU or TensorRT, or damaged)")
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    profile: Profile,
    *,
    workspace_bytes: int,
    timing_cache_path: Path | None,
    log: Callable[[str], None],
) -> Path:
    """Build an engine of the ONNX graph for `profile` on the current CUDA device and write it to
    `engine_path` atomically; the timing cache is read from and saved to `timing_cache_path`.

    TensorRT's warnings go to `log`; a graph it cannot parse or build ends in a UserError.
    """
    trt = import_trt()
    logger = _logger()
    logger.sink, logger.errors = log, []

    # 1. the network, strongly typed: the graph's precision is the engine's
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        reason = parser.get_error(0).desc() if parser.num_errors else logger.reason()
        raise UserError(f"{onnx_path}: TensorRT cannot parse this graph ({reason})")

    # 2. the configuration: workspace, timing cache, one profile for both inputs
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    _timing_cache(config, timing_cache_path, log)
    trt_profile = builder.create_optimization_profile()
    for name in ("lq", "eps"):
        lo, opt, hi = profile.shapes(name)
        trt_profile.set_shape(name, min=lo, opt=opt, max=hi)
    config.add_optimization_profile(trt_profile)

    # 3. build; write the engine, then the timing cache grown by this build
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT could not build {onnx_path} for inputs {profile} ({logger.reason()})")
    with atomic_path(engine_path, ".partial.engine") as tmp:
        tmp.write_bytes(memoryview(serialized))
    if timing_cache_path is not None:
        with atomic_path(timing_cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return engine_path


# ---------------------------------------------------------------- running


class TrtStep:
    """`Upscaler.step` on TensorRT: one engine, one execution context, tensors stay on the GPU.

    It enqueues on the caller's current stream.  On the legacy default stream TensorRT adds device
    synchronizations; callers that want overlap call it under `torch.cuda.stream(...)`.
    """

    def __init__(self, path: Path, device: torch.device, warn: Callable[[str], None]) -> None:
        trt = import_trt()
        if device.type != "cuda":
            raise UserError(f"--backend trt runs on CUDA devices only, got --device {device}")
        self.path, self.device = Path(path), device
        self._log = _logger()
        self._log.sink, self._log.errors = warn, []
        with torch.cuda.device(device):
            self.runtime = trt.Runtime(self._log)
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise UserError(
                    f"{path}: not an engine TensorRT {trt.__version__} can load on this GPU ({self._log.reason()})"
                )
            names = sorted(self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors))
            if names != ["eps", "hr", "lq"]:
                raise UserError(f"{path}: not a gtasr-stream engine (tensors {names})")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise UserError(f"{path}: no GPU memory for a TensorRT execution context")
        dtypes = {
            trt.DataType.FLOAT: torch.float32,
            trt.DataType.HALF: torch.float16,
            trt.DataType.BF16: torch.bfloat16,
        }
        self.dtype = dtypes[self.engine.get_tensor_dtype("lq")]  # the graph's; inputs are cast to it
        lo, opt, hi = ([int(d) for d in dims] for dims in self.engine.get_tensor_profile_shape("lq", 0))
        self.profile = Profile((lo[0], lo[2], lo[3]), (opt[0], opt[2], opt[3]), (hi[0], hi[2], hi[3]))

    def __call__(self, lq: Tensor, eps: Tensor | None) -> Tensor:
        # lq (B,3,h,w) in [-1,1], eps (B or 1,3,4h,4w) or None, on self.device -> (B,3,4h,4w) there
        b, _, h, w = lq.shape
        if not self.profile.covers((b, h, w)):
            raise UserError(
                f"{self.path.name}: this TensorRT engine takes inputs {self.profile} (BxHxW), "
                f"got {b}x{h}x{w}; build one for this size"
            )
        if eps is None:
            eps = lq.new_zeros(1, 3, SCALE * h, SCALE * w)  # y + 0 = y: the same as no noise
        inputs = {"lq": self._input(lq), "eps": self._input(eps.expand(b, -1, -1, -1))}
        hr = torch.empty(b, 3, SCALE * h, SCALE * w, dtype=self.dtype, device=self.device)
        with torch.cuda.device(self.device):
            for name, t in inputs.items():
                if not self.context.set_input_shape(name, tuple(t.shape)):
                    raise RuntimeError(
                        f"TensorRT refused {name} of shape {tuple(t.shape)} ({self._log.reason()})"
                    )
            for name, t in (*inputs.items(), ("hr", hr)):
                self.context.set_tensor_address(name, t.data_ptr())
            self._log.errors = []
            # Same stream as the caller's tensors: no extra synchronization, and the caching
            # allocator cannot hand the inputs' memory to anyone before TensorRT has read it.
            if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
                raise RuntimeError(f"TensorRT could not run {self.path.name} ({self._log.reason()})")
        return hr

    def _input(self, t: Tensor) -> Tensor:
        """t on the device, in the engine's dtype, contiguous NCHW and ALIGNMENT-aligned."""
        t = t.to(self.device, self.dtype).contiguous()
        return t if t.data_ptr() % ALIGNMENT == 0 else t.clone()  # a batch slice can start anywhere


# ---------------------------------------------------------------- --backend trt


class StreamTrtStep:
    """The step of `--backend trt`: engines made for the stream's sizes as they come.

    An engine takes one profile, and a frame size is known only at its first batch.  Whole frames get
    profile_for's fixed-size profile (one engine per frame size); while the caller tiles
    (`current_tile()` > 0: --tile, or Upscaler's out-of-memory ladder) one engine takes every tile,
    (1, 1, 1) to (batch, tile + 2 pad, tile + 2 pad), since a tile does not say the size of its frame.
    Frames too large for TensorRT whole are tiled here, one at a time, and batches larger than an
    engine's are run in parts.
    """

    def __init__(
        self,
        model: ConsistencyModel,
        onnx_path: Path,
        device: torch.device,
        dtype: torch.dtype,
        warn: Callable[[str], None],
        *,
        batch: int,
        tile_pad: int,
        current_tile: Callable[[], int],
    ) -> None:
        self.onnx_path, self.device, self.dtype, self.warn = onnx_path, device, dtype, warn
        self.batch = batch  # the profiles' batch: the out-of-memory ladder's smaller ones fit them
        self.tile_pad, self.current_tile = tile_pad, current_tile
        self.weights_sha256 = weights_sha256(model)
        self.multiple = model.multiple
        self.hr_channels = max(3, model.net.cfg.head_channels)  # the head runs at HR size
        self.engines: dict[Profile, TrtStep] = {}

    def __call__(self, lq: Tensor, eps: Tensor | None) -> Tensor:
        # lq (B,3,h,w) in [-1,1], eps (B or 1,3,4h,4w) or None, on the device -> (B,3,4h,4w) there
        b, _, h, w = lq.shape
        caller_tile = self.current_tile()
        if caller_tile:
            side = caller_tile + 2 * self.tile_pad
            per_tile = _elements(1, side, side, self.multiple, self.hr_channels)
            n = min(self.batch, MAX_ELEMENTS // per_tile)
            if n < 1:
                raise UserError(f"--tile {caller_tile}: tiles this large exceed TensorRT's tensor size limit")
            profile, tile = Profile((1, 1, 1), (n, side, side), (n, side, side)), 0
        else:
            profile, tile = profile_for(
                self.batch,
                h,
                w,
                tile_pad=self.tile_pad,
                multiple=self.multiple,
                hr_channels=self.hr_channels,
                max_elements=MAX_ELEMENTS,  # looked up now: tests lower it to make frames "huge"
            )
        step = self._engine(profile)

        def part(i: int, n: int) -> tuple[Tensor, Tensor | None]:
            return lq[i : i + n], eps if eps is None or eps.shape[0] == 1 else eps[i : i + n]

        if tile:  # one frame does not fit TensorRT: tiles of it, at batch 1
            return torch.cat([run_tiled(step, *part(i, 1), tile, self.tile_pad, SCALE) for i in range(b)])
        n = profile.max[0]
        return torch.cat([step(*part(i, n)) for i in range(0, b, n)])

    def _engine(self, profile: Profile) -> TrtStep:
        if profile not in self.engines:
            with torch.cuda.device(self.device):  # TensorRT builds for the current device
                path = cached_engine(
                    self.onnx_path,
                    self.weights_sha256,
                    PRECISIONS[self.dtype],  # names the file; the graph's own precision is what runs
                    profile,
                    default_cache_dir(),
                    DEFAULT_WORKSPACE,
                    self.warn,
                )
            self.engines[profile] = TrtStep(path, self.device, self.warn)
        return self.engines[profile]


def trt_step(
    model: ConsistencyModel,
    onnx: str | Path | None,
    device: torch.device,
    dtype: torch.dtype,
    warn: Callable[[str], None],
    *,
    batch: int,
    tile_pad: int,
    current_tile: Callable[[], int],
) -> StreamTrtStep:
    """The step for `--backend trt`: engines of the ONNX graph at `onnx`, or of the model exported
    once into the cache.  The engines are built (or found in the cache) at the first batch of each
    frame size, so a graph TensorRT cannot build fails there, not here.

    batch: the largest batch the caller hands the step; tile_pad: its tiles' overlap;
    current_tile: its tile size at the moment of a call (0: whole frames).
    """
    import_trt()  # before a long export, not after
    if device.type != "cuda":
        raise UserError(f"--backend trt runs on CUDA devices only, got --device {device}")
    if onnx is None:
        path = cached_onnx(model, dtype, None, default_cache_dir(), warn)
    else:
        path = Path(onnx)
        if not path.is_file():
            raise UserError(f"--onnx {path}: no such file")
    return StreamTrtStep(
        model, path, device, dtype, warn, batch=batch, tile_pad=tile_pad, current_tile=current_tile
    )
