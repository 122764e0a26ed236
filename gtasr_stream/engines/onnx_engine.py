"""The ONNX backend: the whole one-step sampler as one ONNX graph, its cache, and an ONNX Runtime step.

`SamplerGraph` is `sample_one_step` in a form that exports with dynamic batch, height and width
(pad, bicubic x4, x_T = y + eps, f(x_T, 1, lq), clamp, crop); `export_onnx` writes it, `cached_onnx`
keeps one export per weights/precision/opset/torch, `OnnxStep` runs it, `onnx_step` builds the step
of `--backend onnx` and `onnx_available` says whether it can run here.

It lives in the runtime, not in `export/`, because `gtasr-stream --backend onnx` exports on first use
and imports only point down (DESIGN.md); `gtasr-export` builds on these functions.  onnx/onnxscript
(export) and onnxruntime (run) are optional and imported where used, with one-line errors.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from ..files import atomic_path
from ..model import SCALE, ConsistencyModel, sample_padded

GRAPH_VERSION = 1  # part of the cache key: bump when SamplerGraph changes what it computes
BF16_MIN_OPSET = 22  # ONNX Conv and Resize accept bfloat16 from opset 22
EXAMPLE_SHAPE = (2, 37, 53)  # (B,h,w) traced for dynamic graphs: B > 1, h != w, neither a multiple
PRECISIONS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
ORT_MISSING = "--backend onnx needs onnxruntime: pip install gtasr-stream[onnx]"
EXPORT_MISSING = "exporting to ONNX needs onnx and onnxscript: pip install gtasr-stream[onnx]"


def _pad_index(n: int, pad: int, device: torch.device) -> Tensor:
    """Source index of each of n + pad positions when `pad` are added at the end, as sample_one_step
    pads: reflect where pad < n, else replicate.  (n + pad,) long.

    Index arithmetic instead of F.pad(mode=...) because a Python `if` on a traced size would freeze
    one of the two modes into the graph; here the choice is a tensor op, so any h, w works.
    """
    i = torch.arange(n + pad, device=device)
    mirror = 2 * (n - 1) - i  # reflection about the last row; negative only where pad >= n
    reflect_fits = mirror[-1:] >= 0  # (1,) bool: the farthest padded row has a reflection
    return torch.where(i < n, i, torch.where(reflect_fits, mirror, n - 1))


class SamplerGraph(nn.Module):
    """sample_one_step(model, lq, eps) as one traceable graph: (lq, eps) -> hr, any B, h, w >= 1."""

    def __init__(self, model: ConsistencyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, lq: Tensor, eps: Tensor) -> Tensor:
        # lq (B,3,h,w) in [-1,1], eps (B,3,4h,4w) ~ N(0,1), both in the model's dtype
        h, w = lq.shape[-2:]
        m = self.model.multiple
        # padded LR size, written as a multiple of m so that torch.export sees hp % m == 0
        hp, wp = (h + m - 1) // m * m, (w + m - 1) // m * m

        # 1. pad LR bottom/right to the multiple, and eps the same way at HR
        lq_p = lq[:, :, _pad_index(h, hp - h, lq.device)][:, :, :, _pad_index(w, wp - w, lq.device)]
        iy, ix = (
            _pad_index(SCALE * h, SCALE * (hp - h), lq.device),
            _pad_index(SCALE * w, SCALE * (wp - w), lq.device),
        )
        eps_p = eps[:, :, iy][:, :, :, ix]

        # 2. x_T = y + eps, one model call at eta = 1, clamp; then crop
        return sample_padded(self.model, lq_p, eps_p)[:, :, : SCALE * h, : SCALE * w]  # (B,3,4h,4w)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter warns about things that do not concern us (torchvision ops, deprecations)."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def export_onnx(
    model: ConsistencyModel,
    path: Path,
    *,
    opset: int | None,
    dtype: torch.dtype,
    dynamic: bool,
    shape: tuple[int, int, int] = EXAMPLE_SHAPE,
) -> Path:
    """Write the one-step sampler to `path` as one ONNX graph, atomically, and check it with onnx.

    Inputs lq (B,3,h,w) and eps (B,3,4h,4w), output hr (B,3,4h,4w), all in `dtype` and [-1,1].
    dynamic: B, h, w are free ('batch', 'height', 'width'); else the graph takes `shape` (B,h,w) only.
    opset None: the exporter's default (BF16_MIN_OPSET for bfloat16).  The dynamo-based exporter
    (torch.export): the TorchScript one is deprecated, and this one proves the shapes symbolically.
    """
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {', '.join(map(str, PRECISIONS))}, got {dtype}")
    if dtype == torch.bfloat16:
        opset = opset or BF16_MIN_OPSET
        if opset < BF16_MIN_OPSET:
            raise ValueError(f"bfloat16 graphs need opset >= {BF16_MIN_OPSET}, got {opset}")
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter's translator)
    except ImportError:
        raise UserError(EXPORT_MISSING) from None

    # A copy on the CPU: the caller's model stays as it is (Upscaler's CUDA one is channels_last).
    net = copy.deepcopy(model).to("cpu", dtype)
    net = net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    graph = SamplerGraph(net.eval()).eval()
    b, h, w = shape
    example = (torch.zeros(b, 3, h, w, dtype=dtype), torch.zeros(b, 3, SCALE * h, SCALE * w, dtype=dtype))
    dynamic_shapes = None
    if dynamic:
        batch, height, width = (torch.export.Dim(n, min=1) for n in ("batch", "height", "width"))
        dynamic_shapes = {
            "lq": {0: batch, 2: height, 3: width},
            "eps": {0: batch, 2: SCALE * height, 3: SCALE * width},
        }
    with _quiet_exporter():
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            input_names=["lq", "eps"],
            output_names=["hr"],
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            external_data=False,  # one file; fine below protobuf's 2 GB (the paper preset is 0.7 GB)
            verbose=False,
        )
    assert program is not None
    proto = program.model_proto
    if dynamic:  # the crop's sizes come out as Min(4*height, ...): name them as eps's
        for axis, name in ((2, f"{SCALE}*height"), (3, f"{SCALE}*width")):
            proto.graph.output[0].type.tensor_type.shape.dim[axis].dim_param = name

    path = Path(path)
    with atomic_path(path, ".partial.onnx") as tmp:
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)  # full_check: also infers every shape
    return path


# ---------------------------------------------------------------- the cache of exported graphs


def weights_sha256(model: ConsistencyModel) -> str:
    """sha256 of the network's config and float32 tensors: the same weights give the same key,
    whichever file (or none) they came from."""
    digest = hashlib.sha256(repr(model.net.cfg).encode())
    for name, t in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def onnx_cache_key(weights_sha256: str, dtype: torch.dtype, opset: int | None, torch_version: str) -> str:
    """File stem of a cached graph: everything that changes the exported file goes in."""
    ingredients = f"{weights_sha256}|{dtype}|{opset}|{torch_version}|graph{GRAPH_VERSION}"
    return f"gtasr-{PRECISIONS[dtype]}-{hashlib.sha256(ingredients.encode()).hexdigest()[:24]}"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/gtasr-stream, else ~/.cache/gtasr-stream."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gtasr-stream"


def cached_onnx(
    model: ConsistencyModel,
    dtype: torch.dtype,
    opset: int | None,
    cache_dir: Path,
    on_export: Callable[[str], None] = lambda msg: None,
) -> Path:
    """The dynamic graph of `model` in `cache_dir`, exported (and announced) only when absent."""
    path = cache_dir / f"{onnx_cache_key(weights_sha256(model), dtype, opset, torch.__version__)}.onnx"
    if path.is_file():
        return path
    on_export(f"exporting the model to ONNX once (up to a minute), cached as {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return export_onnx(model, path, opset=opset, dtype=dtype, dynamic=True)
    except OSError as e:
        raise UserError(
            f"cannot write the ONNX cache in {cache_dir} ({e.strerror or e}); pass --onnx PATH"
        ) from e


# ---------------------------------------------------------------- running it


def onnx_available() -> bool:
    """onnxruntime importable: all `--backend onnx` needs to run a graph (exporting one needs onnx too)."""
    try:
        _import_ort()
    except UserError:
        return False
    return True


def _import_ort() -> object:
    try:
        import onnxruntime
    except ImportError:
        raise UserError(ORT_MISSING) from None
    return onnxruntime


_GRAPH_DTYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


class OnnxStep:
    """`Upscaler.step` on ONNX Runtime: CUDA provider for a CUDA device when installed, else CPU.

    Tensors go through host memory (no IO binding yet): simple, and costs a copy per call on CUDA.
    """

    def __init__(self, path: Path, device: torch.device, warn: Callable[[str], None]) -> None:
        ort: Any = _import_ort()
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
            else:
                warn(
                    "this onnxruntime has no CUDA provider (pip install onnxruntime-gpu): the graph runs on the CPU"
                )
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime raises its own types for unreadable or invalid files
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{path}: not a loadable ONNX graph ({reason})") from e
        ins = [(i.name, i.type) for i in self.session.get_inputs()]
        outs = [o.name for o in self.session.get_outputs()]
        if [n for n, _ in ins] != ["lq", "eps"] or outs != ["hr"]:
            raise UserError(
                f"{path}: not a gtasr-stream graph (inputs {[n for n, _ in ins]}, outputs {outs})"
            )
        if ins[0][1] not in _GRAPH_DTYPES:
            raise UserError(
                f"{path}: a {ins[0][1]} graph; onnxruntime runs this network in fp32 or fp16 only"
            )
        self.dtype = _GRAPH_DTYPES[ins[0][1]]  # the graph's; inputs are cast to it
        self.device = device

    def __call__(self, lq: Tensor, eps: Tensor | None) -> Tensor:
        # lq (B,3,h,w) in [-1,1], eps (B or 1,3,4h,4w) or None, on self.device -> (B,3,4h,4w) there
        b, _, h, w = lq.shape
        if eps is None:
            eps = torch.zeros(1, 3, SCALE * h, SCALE * w)  # y + 0 = y: the same as no noise
        feeds = {"lq": self._host(lq), "eps": self._host(eps.expand(b, -1, -1, -1))}
        try:
            (hr,) = self.session.run(["hr"], feeds)
        except Exception as e:
            if "Failed to allocate memory" in str(e):  # let Upscaler's OOM ladder handle it as torch's
                raise torch.OutOfMemoryError(str(e)) from e
            raise
        return torch.from_numpy(hr).to(self.device)

    def _host(self, t: Tensor) -> np.ndarray:
        return t.detach().to("cpu", self.dtype).contiguous().numpy()


def onnx_step(
    model: ConsistencyModel,
    onnx: str | Path | None,
    device: torch.device,
    dtype: torch.dtype,
    warn: Callable[[str], None],
) -> OnnxStep:
    """The step for `--backend onnx`: the graph at `onnx`, or the model exported once into the cache."""
    _import_ort()  # before a long export, not after
    if onnx is None:
        if dtype not in (torch.float32, torch.float16):
            raise UserError(
                "--backend onnx runs fp32 or fp16 graphs (onnxruntime has no bfloat16 kernels for this network): leave out --bf16"
            )
        path = cached_onnx(model, dtype, None, default_cache_dir(), warn)
    else:
        path = Path(onnx)
        if not path.is_file():
            raise UserError(f"--onnx {path}: no such file")
    return OnnxStep(path, device, warn)
