"""Network weights on disk: safetensors files with the preset and config in their metadata.

Owns the file format (FORMAT_VERSION), atomic saving, validated loading with one-line errors, and the
location of the default weights shipped inside the package. Never unpickles: safetensors only.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import UserError
from .files import atomic_path
from .model.network import HEAD_UPSAMPLES, PRESETS, GTASRNet, build_network

FORMAT = "gtasr-stream"
FORMAT_VERSION = 1
CHECKPOINTS = Path(__file__).parent / "checkpoints"
# The shipped models (--model NAME); both are the same preset, so --denoise can blend them.
MODELS: dict[str, str] = {
    "video": "video.safetensors",  # real video: optics blur, resampling, light noise, codecs (the default)
    "restore": "restore.safetensors",  # badly damaged sources: heavy blur, noise and JPEG (Real-ESRGAN's)
}
DEFAULT_MODEL = "video"
DEFAULT_WEIGHTS = CHECKPOINTS / MODELS[DEFAULT_MODEL]
_RESERVED = ("format", "format_version", "preset", "config", "provenance")


class WeightsError(UserError):
    """A weights file is missing, unreadable or does not fit its preset; one line naming the file."""


def _shape(s: tuple[int, ...] | list[int] | torch.Size) -> str:
    return str(tuple(s))


def save_weights(
    path: Path,
    net: GTASRNet,
    preset: str,
    provenance: str,
    extra: dict[str, str] | None = None,
) -> None:
    """Write net's tensors (in their stored dtype) and metadata to path atomically."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; allowed: {', '.join(PRESETS)}")
    preset_cfg = dataclasses.replace(
        PRESETS[preset], head_upsample=net.cfg.head_upsample, grid_notch=net.cfg.grid_notch
    )
    if net.cfg != preset_cfg:
        raise ValueError(f"the network's config is not preset {preset!r}; load_weights could not rebuild it")
    extra = extra or {}
    clash = [k for k in extra if k in _RESERVED]
    if clash:
        raise ValueError(f"extra metadata may not set reserved keys {clash}")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "preset": preset,
        "config": json.dumps(dataclasses.asdict(net.cfg)),
        "provenance": provenance,
        **extra,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    path = Path(path)
    # Temp file beside the target, then rename: a crash never leaves a half-written file at path.
    with atomic_path(path, ".partial.tmp") as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load_weights(path: Path, preset: str | None = None) -> tuple[GTASRNet, dict[str, str]]:
    """Build the file's preset and load its tensors (as float32); returns (net in eval mode, metadata).

    Raises WeightsError for a missing or unreadable file, missing/unknown preset metadata, a preset
    other than `preset` (when given), and any missing, unexpected, wrongly shaped, non-float or
    non-finite tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises several types for a bad header
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"{path}: not a readable safetensors file ({reason})") from e

    file_preset = metadata.get("preset")
    if file_preset is None:
        raise WeightsError(f"{path}: no 'preset' in the file's metadata (not a {FORMAT} file?)")
    if file_preset not in PRESETS:
        known = ", ".join(PRESETS)
        raise WeightsError(f"{path}: unknown preset {file_preset!r} (this version knows {known})")
    if preset is not None and file_preset != preset:
        raise WeightsError(f"{path}: holds preset {file_preset!r}, but preset {preset!r} was asked")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise WeightsError(
            f"{path}: format version {version!r} is not supported (this version reads <= {FORMAT_VERSION})"
        )

    # A preset's per-file variants, recorded in the config; files written before a field existed
    # (format 1 from before 2026-12-07) have a nearest head and no notch.
    try:
        recorded = json.loads(metadata.get("config", "{}"))
    except ValueError:
        recorded = {}
    if not isinstance(recorded, dict):
        recorded = {}
    head = recorded.get("head_upsample", "nearest")
    notch = recorded.get("grid_notch", 0)
    if head not in HEAD_UPSAMPLES:
        raise WeightsError(
            f"{path}: unknown head_upsample {head!r} in its config (this version knows nearest, bilinear)"
        )
    if type(notch) is not int or not (notch == 0 or (notch % 2 == 1 and notch < 64)):
        raise WeightsError(f"{path}: grid_notch {notch!r} in its config is not 0 or an odd size below 64")
    net = build_network(file_preset, head_upsample=head, grid_notch=notch)
    expected = net.state_dict()
    for k in expected:
        if k not in shapes:
            raise WeightsError(f"{path}: tensor {k!r} is missing (preset {file_preset!r})")
    for k in shapes:
        if k not in expected:
            raise WeightsError(f"{path}: unexpected tensor {k!r} (preset {file_preset!r})")
    for k, t in expected.items():
        if shapes[k] != tuple(t.shape):
            raise WeightsError(
                f"{path}: tensor {k!r} has shape {_shape(shapes[k])}, "
                f"preset {file_preset!r} expects {_shape(t.shape)}"
            )

    state = {}
    with safe_open(str(path), framework="pt") as f:
        for k, want in expected.items():
            t = f.get_tensor(k)
            if want.is_floating_point():  # an integer or bool tensor here would load as garbage
                if not t.is_floating_point():
                    dtype = str(t.dtype).removeprefix("torch.")
                    raise WeightsError(
                        f"{path}: tensor {k!r} is {dtype}, not floating point (a damaged or foreign file)"
                    )
                t = t.float()
                if not torch.isfinite(t).all():  # a diverged run: the output would be one flat colour
                    raise WeightsError(
                        f"{path}: tensor {k!r} holds NaN or infinite values (training diverged?)"
                    )
            state[k] = t
    net.load_state_dict(state, strict=True)
    return net.eval(), metadata


def model_weights(name: str) -> Path:
    """The shipped file of --model NAME, or WeightsError naming the allowed names or the missing file."""
    if name not in MODELS:
        raise WeightsError(f"--model: unknown model {name!r}; shipped models: {', '.join(MODELS)}")
    path = CHECKPOINTS / MODELS[name]
    if not path.is_file():
        raise WeightsError(f"--model {name}: its weights are not installed (expected {path})")
    return path


def blend_weights(a: Path, b: Path, s: float) -> tuple[GTASRNet, dict[str, str]]:
    """(1 - s)·a + s·b, tensor by tensor (Real-ESRGAN's -dn): s = 0 gives a, s = 1 gives b exactly.

    Both files must hold the same preset; the metadata is a's, with the blend recorded in it and the
    output sharpening (their 'sharpen') blended too.
    """
    if not 0.0 <= s <= 1.0:
        raise WeightsError(f"--denoise must be in [0, 1], got {s}")
    net_a, meta = load_weights(a)
    net_b, meta_b = load_weights(b, preset=meta["preset"])
    if s in (0.0, 1.0):  # exact: no arithmetic on the weights at the ends
        return (net_a, meta) if s == 0.0 else (net_b, meta_b)
    state_b = net_b.state_dict()
    blended = {k: torch.lerp(v, state_b[k], s) for k, v in net_a.state_dict().items()}
    # Heads of different upsampling (a file from before bilinear heads) cannot be blended: the blend
    # runs the head of the file with the larger share, so either end is approached continuously.
    net = net_a if s < 0.5 else net_b
    net.load_state_dict(blended)
    sharpen = (1 - s) * float(meta.get("sharpen", 0)) + s * float(meta_b.get("sharpen", 0))
    return net, meta | {"provenance": f"{1 - s:g} x {a.name} + {s:g} x {b.name}", "sharpen": f"{sharpen:g}"}


def load_net(
    weights: str | Path | None = None, model: str | None = None, denoise: float | None = None
) -> tuple[GTASRNet, dict[str, str]]:
    """The network --weights FILE, -n/--model NAME or --denoise S picks (default: the `video` model).

    --denoise S blends the shipped `video` (S = 0) and `restore` (S = 1) models; it names both, so it
    takes neither --model nor --weights.
    """
    if weights is not None and (model is not None or denoise is not None):
        raise WeightsError("--weights names a file: leave out --model and --denoise")
    if denoise is not None:
        if model is not None:
            raise WeightsError("--denoise blends the video and restore models: leave out --model")
        return blend_weights(model_weights("video"), model_weights("restore"), denoise)
    return load_weights(Path(weights) if weights is not None else model_weights(model or DEFAULT_MODEL))


def default_weights() -> Path:
    """The weights file shipped inside the package, or WeightsError when none is installed."""
    if not DEFAULT_WEIGHTS.is_file():
        raise WeightsError(
            f"no default weights are installed (expected {DEFAULT_WEIGHTS}); pass --weights PATH"
        )
    return DEFAULT_WEIGHTS
