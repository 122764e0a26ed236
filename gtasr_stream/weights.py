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
from .model.network import PRESETS, GTASRNet, build_network

FORMAT = "gtasr-stream"
FORMAT_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).parent / "checkpoints" / "default.safetensors"
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
    if net.cfg != PRESETS[preset]:
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
    other than `preset` (when given), and any missing, unexpected or wrongly shaped tensor.
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

    net = build_network(file_preset)
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

    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k).float() for k in expected}
    net.load_state_dict(state, strict=True)
    return net.eval(), metadata


def default_weights() -> Path:
    """The weights file shipped inside the package, or WeightsError when none is installed."""
    if not DEFAULT_WEIGHTS.is_file():
        raise WeightsError(
            f"no default weights are installed (expected {DEFAULT_WEIGHTS}); pass --weights PATH"
        )
    return DEFAULT_WEIGHTS
