"""The AOTInductor backend: the one-step sampler compiled ahead of time into a `.pt2` package
(torch.export + AOTInductor), its cache, and a step that runs it without the Python model code.

The compiled graph is `sample_padded` (bicubic x4, x_T = y + eps, f(x_T, 1, lq), clamp) on inputs whose
sides are multiples of the network's LR multiple, with dynamic batch, height and width; `AotiStep` pads
and crops around it on the device exactly as `sample_one_step` does, so any frame size works.  A
package is compiled for one device type (CPU code, or CUDA kernels for one GPU architecture) and one
precision, and needs a C++ compiler to build (not to run).  `aoti_step` builds the step of
`--backend aoti`; `aoti_available` says whether a package can be compiled here.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import platform
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError, held_stderr
from ..files import atomic_path
from ..model import SCALE, ConsistencyModel, pad_bottom_right, sample_padded
from .onnx_engine import PRECISIONS, default_cache_dir, weights_sha256

PACKAGE_VERSION = 1  # part of the cache key: bump when PaddedSampler changes what it computes
COMPILER_MISSING = "--backend aoti compiles C++ once per model: install a C++ compiler (e.g. apt install g++)"


class PaddedSampler(nn.Module):
    """sample_padded(model, lq, eps) as a module for torch.export: (lq, eps) -> hr."""

    def __init__(self, model: ConsistencyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, lq: Tensor, eps: Tensor) -> Tensor:
        # lq (B,3,h,w), eps (B,3,4h,4w); h, w multiples of model.multiple -> (B,3,4h,4w)
        return sample_padded(self.model, lq, eps)


def device_tag(device: torch.device) -> str:
    """What a compiled package is specific to: the CPU architecture, or the GPU and its compute capability."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm{major}{minor}-{torch.cuda.get_device_name(device)}"
    return f"cpu-{platform.machine()}"


def package_cache_key(weights_sha256: str, dtype: torch.dtype, device: str, torch_version: str) -> str:
    """File stem of a cached package: everything that changes the compiled code goes in."""
    ingredients = f"{weights_sha256}|{dtype}|{device}|{torch_version}|package{PACKAGE_VERSION}"
    return f"gtasr-{PRECISIONS[dtype]}-{hashlib.sha256(ingredients.encode()).hexdigest()[:24]}"


def compiler_available() -> bool:
    """Inductor builds its C++ (and CUDA host code) with the system compiler."""
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def aoti_available() -> bool:
    """AOTInductor ships with torch; what can be missing is the C++ compiler a first compile needs
    (a package given with --pt2 runs without one)."""
    return compiler_available()


def compile_package(model: ConsistencyModel, path: Path, *, dtype: torch.dtype, device: torch.device) -> Path:
    """torch.export the padded sampler with dynamic B, h, w (multiples of model.multiple) and compile it
    with AOTInductor for `device` into the package `path` (written atomically)."""
    if not compiler_available():
        raise UserError(COMPILER_MISSING)
    net = copy.deepcopy(model).to(device, dtype).eval()
    net = net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    m = net.multiple
    # Sizes as multiples of m so that the padded shapes are exact; example 2x3 blocks (not 1: torch.export
    # specialises sizes of 1) and batch 2.
    batch = torch.export.Dim("batch", min=1, max=1024)
    hb, wb = torch.export.Dim("h_blocks", min=1, max=1024), torch.export.Dim("w_blocks", min=1, max=1024)
    example = (
        torch.zeros(2, 3, 2 * m, 3 * m, dtype=dtype, device=device),
        torch.zeros(2, 3, SCALE * 2 * m, SCALE * 3 * m, dtype=dtype, device=device),
    )
    dynamic = {
        "lq": {0: batch, 2: m * hb, 3: m * wb},
        "eps": {0: batch, 2: SCALE * m * hb, 3: SCALE * m * wb},
    }
    with torch.no_grad():
        program = torch.export.export(
            PaddedSampler(net).eval(), example, dynamic_shapes=dynamic, strict=False
        )
        with atomic_path(Path(path), ".partial.pt2") as tmp:
            meta = {
                "gtasr_format": str(PACKAGE_VERSION),
                "gtasr_torch": torch.__version__,  # a package from another torch may not load: say so
                "gtasr_dtype": PRECISIONS[dtype],
                "gtasr_multiple": str(m),
            }
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(tmp), inductor_configs={"aot_inductor.metadata": meta}
            )
    return Path(path)


def _cache_path(model: ConsistencyModel, dtype: torch.dtype, device: torch.device, cache_dir: Path) -> Path:
    key = package_cache_key(weights_sha256(model), dtype, device_tag(device), torch.__version__)
    return cache_dir / f"{key}.pt2"


def cached_package(
    model: ConsistencyModel,
    dtype: torch.dtype,
    device: torch.device,
    cache_dir: Path,
    on_compile: Callable[[str], None] = lambda msg: None,
) -> Path:
    """The package of `model` for (dtype, device) in `cache_dir`, compiled (and announced) only when absent."""
    path = _cache_path(model, dtype, device, cache_dir)
    if path.is_file():
        return path
    on_compile(f"compiling the model with AOTInductor once (a few minutes), cached as {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return compile_package(model, path, dtype=dtype, device=device)
    except OSError as e:
        raise UserError(f"cannot write the AOTInductor cache in {cache_dir} ({e.strerror or e})") from e


class AotiStep:
    """`Upscaler.step` on an AOTInductor package: device tensors in and out, pad/crop on the device.

    The package says its precision and LR multiple in its metadata (written by compile_package), so
    it runs without the model's Python code.
    """

    def __init__(
        self, path: Path, device: torch.device, warn: Callable[[str], None] = lambda msg: None
    ) -> None:
        index = device.index if device.index is not None else (0 if device.type == "cuda" else -1)
        try:
            with _torch_quiet() as said:
                self.runner: Any = torch._inductor.aoti_load_package(str(path), device_index=index)
            meta = self.runner.get_metadata()
        except Exception as e:  # the loader raises RuntimeError or ValueError for wrong files or devices
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = (
                "; a package from another torch version must be compiled again: gtasr-export --pt2"
                if zipfile.is_zipfile(path)
                else ""
            )
            raise UserError(f"{path}: not a loadable AOTInductor package ({reason}){hint}") from e
        if meta.get("gtasr_format") != str(PACKAGE_VERSION):
            raise UserError(f"{path}: not a gtasr-stream package (compile it with gtasr-export --pt2)")
        if meta.get("AOTI_DEVICE_KEY", device.type) != device.type:
            raise UserError(f"{path}: compiled for {meta['AOTI_DEVICE_KEY']}, not for --device {device}")
        made_by = meta.get("gtasr_torch")
        if "outdated" in said() or (made_by is not None and made_by != torch.__version__):
            warn(
                f"{path} was compiled by torch {made_by or 'of an older version'}, this is torch "
                f"{torch.__version__}: if it fails or is slow, compile it again with gtasr-export --pt2"
            )
        elif said().strip():  # something else torch printed: passed on, not lost
            sys.stderr.write(said())
        self.dtype = {v: k for k, v in PRECISIONS.items()}[meta["gtasr_dtype"]]
        self.multiple, self.device = int(meta["gtasr_multiple"]), device

    def __call__(self, lq: Tensor, eps: Tensor | None) -> Tensor:
        # lq (B,3,h,w) in [-1,1], eps (B or 1,3,4h,4w) or None, on self.device -> (B,3,4h,4w) there
        b, _, h, w = lq.shape
        m = self.multiple
        ph, pw = -h % m, -w % m
        lq_p = pad_bottom_right(lq.to(self.dtype), ph, pw).contiguous()
        if eps is None:  # y + 0 = y: the same as no noise
            eps_p = torch.zeros(b, 3, SCALE * (h + ph), SCALE * (w + pw), dtype=self.dtype, device=lq.device)
        else:
            eps_p = pad_bottom_right(eps.to(self.dtype), SCALE * ph, SCALE * pw)
            eps_p = eps_p.expand(b, -1, -1, -1).contiguous()
        out = self.runner(lq_p, eps_p)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out[:, :, : SCALE * h, : SCALE * w]


@contextlib.contextmanager
def _torch_quiet() -> Iterator[Callable[[], str]]:
    """Hold back what torch prints while it loads a package; yields a function returning that text.

    torch logs "Loading outdated pt2 file" for ANY file its new loader refuses (a stale package, a
    wrong file) and its C++ loader prints to file descriptor 2 directly; our own message says what
    happened instead.
    """
    names = ("torch._inductor.package.package", "torch.export.pt2_archive._package")
    loggers = [logging.getLogger(n) for n in names]
    was = [lg.disabled for lg in loggers]
    try:
        for lg in loggers:
            lg.disabled = True
        with held_stderr() as said:
            yield said
    finally:
        for lg, w in zip(loggers, was, strict=True):
            lg.disabled = w


def aoti_step(
    model: ConsistencyModel,
    pt2: str | Path | None,
    device: torch.device,
    dtype: torch.dtype,
    warn: Callable[[str], None],
) -> AotiStep:
    """The step for `--backend aoti`: the package at `pt2`, or the model compiled once into the cache."""
    if pt2 is None:
        path = cached_package(model, dtype, device, default_cache_dir(), warn)
    else:
        path = Path(pt2)
        if not path.is_file():
            raise UserError(f"--pt2 {path}: no such file")
    return AotiStep(path, device, warn)
