"""Atomic, resumable checkpoints: a folder per step, written under a temporary name, synced and renamed.

A checkpoint holds theta and the EMA as gtasr-stream weight files (so any checkpoint's
`ema.safetensors` runs in `gtasr-stream --weights`), the AdamW state as safetensors, and the step
in `state.json`.  No RNG state is needed: each step's randomness is seeded from (seed, step, rank).
A checkpoint that cannot be read (a disk error, a file cut short by a crash of the machine) is passed
over for the one before it, with a warning naming it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gtasr_stream.errors import UserError
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
    try:
        tmp.mkdir()
        save_weights(tmp / "model.safetensors", model.net, preset, provenance)
        save_weights(tmp / "ema.safetensors", ema.net, preset, provenance)
        opt_state = opt.state_dict()
        tensors = {f"{i}.{k}": v.contiguous() for i, s in opt_state["state"].items() for k, v in s.items()}
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps({"step": step, "param_groups": opt_state["param_groups"], **state})
        )
        for part in tmp.iterdir():  # on disk before the rename makes the folder a checkpoint
            with open(part, "rb") as f:
                os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)  # atomic: a checkpoint folder is complete or absent
    except BaseException as e:  # disk full, Ctrl-C: no half-written folder stays; the last checkpoint does
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            last = latest_checkpoint(folder)
            raise UserError(
                f"cannot write checkpoint {final.name} in {folder} ({e.strerror or e}); "
                + (f"{last.name} is intact: --resume continues from it" if last else "no checkpoint yet")
            ) from e
        raise
    _sync_folder(folder)
    for old in sorted(folder.glob("step_*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX: fsync the directory); not possible everywhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoint folders in `folder`, newest first."""
    return sorted((p for p in folder.glob("step_*") if (p / "state.json").is_file()), reverse=True)


def latest_checkpoint(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[0] if found else None


def resume_checkpoint(
    folder: Path,
    preset: str,
    model: ConsistencyModel,
    ema: ConsistencyModel,
    opt: torch.optim.Optimizer,
    warn: Callable[[str], None],
) -> dict[str, Any] | None:
    """Load the newest checkpoint of `folder` that can be read (`--resume`) and return its state.json.

    None, with a warning, when there is none: the run starts at step 0, so that one command line
    serves the first start and every restart (as Lightning's ckpt_path="last").  Damaged ones are
    passed over with a warning naming them; when none can be read it is an error, since starting
    afresh would bury that run's work.
    """
    found = checkpoints(folder)
    if not found:
        warn(f"--resume: no checkpoint in {folder}; starting at step 0")
        return None
    damaged = []
    for path in found:
        try:
            state = load_checkpoint(path, preset, model, ema, opt)  # all three parts replaced, or raises
        except Exception as e:  # safetensors, json, a load_state_dict mismatch: all say why in one line
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            damaged.append(f"{path.name} ({reason[:200]})")
            continue
        if damaged:
            warn(f"--resume: cannot read {', '.join(damaged)}; resuming from {path}")
        return state
    raise ValueError(
        f"--resume: no checkpoint in {folder} can be read: {', '.join(damaged)}; "
        "move them away to start afresh"
    )


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
