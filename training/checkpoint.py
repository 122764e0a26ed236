"""Atomic, resumable checkpoints: a folder per step, written under a temporary name and renamed.

A checkpoint holds theta and the EMA as gtasr-stream weight files (so any checkpoint's
`ema.safetensors` runs in `gtasr-stream --weights`), the AdamW state as safetensors, and the step
in `state.json`.  No RNG state is needed: each step's randomness is seeded from (seed, step, rank).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gtasr_stream.model import ConsistencyModel
from gtasr_stream.weights import load_weights, save_weights

KEEP = 2  # newest checkpoints kept; older ones are deleted after a successful write


def save_checkpoint(
    folder: Path,
    step: int,
    model: ConsistencyModel,
    ema: ConsistencyModel,
    opt: torch.optim.Optimizer,
    preset: str,
    provenance: str,
    state: dict[str, Any],
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    tmp = folder / f".step_{step:08d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_weights(tmp / "model.safetensors", model.net, preset, provenance)
    save_weights(tmp / "ema.safetensors", ema.net, preset, provenance)
    opt_state = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, s in opt_state["state"].items() for k, v in s.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(
        json.dumps({"step": step, "param_groups": opt_state["param_groups"], **state})
    )
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)  # atomic: a checkpoint folder is complete or absent
    for old in sorted(folder.glob("step_*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("step_*") if (p / "state.json").is_file())
    return found[-1] if found else None


def load_checkpoint(
    path: Path, preset: str, model: ConsistencyModel, ema: ConsistencyModel, opt: torch.optim.Optimizer | None
) -> dict[str, Any]:
    """Restore theta, the EMA and (if given) AdamW from a checkpoint folder; returns state.json."""
    state: dict[str, Any] = json.loads((path / "state.json").read_text())
    for name, target in (("model", model), ("ema", ema)):
        net, _ = load_weights(path / f"{name}.safetensors", preset=preset)
        target.net.load_state_dict(net.state_dict())
    if opt is not None:
        flat = load_file(str(path / "optimizer.safetensors"))
        per: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in flat.items():
            i, name = key.split(".", 1)
            per.setdefault(int(i), {})[name] = value
        opt.load_state_dict({"state": per, "param_groups": state["param_groups"]})
    return state
