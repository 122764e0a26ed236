"""`--ray ADDRESS|auto`: the segments of `segmented.py` as Ray tasks, on every machine of a cluster.

Ray places the tasks (one GPU each with `-d cuda`, one CPU each with `-d cpu`) and runs a task
again when its worker or machine dies (`max_retries`); a task that fails for a reason of ours
(a UserError) is not retried.  Every worker reads the input and writes its segment at the same
paths as this process, so IN and the work folder beside OUT must be on storage every machine sees
(NFS, a shared volume).  Each worker process loads the model once and keeps it for its next tasks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .errors import UserError
from .segment_task import RAY_RETRIES, Task, run_task

_loaded: dict[str, Any] = {}  # in a Ray worker process: the Upscaler of the tasks it ran before


def _segment(task: Task, engine: dict[str, Any]) -> tuple[int, list[str]]:
    """One segment, in a Ray worker: the device Ray gave it (CUDA_VISIBLE_DEVICES), or its CPUs."""
    import ray
    import torch

    from .engines.upscaler import Upscaler

    said: list[str] = []
    gpus = ray.get_gpu_ids()
    device = "cuda:0" if gpus else "cpu"
    if device == "cpu":
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))
    key = repr(sorted({**engine, "device": device}.items()))
    if _loaded.get("key") != key:
        _loaded["up"] = Upscaler(**{**engine, "device": device}, on_warning=said.append)
        _loaded["key"] = key
    up = _loaded["up"]
    up.warn = said.append
    return run_task(task, up, said.append), said


def run_on_ray(
    tasks: list[Task],
    engine: dict[str, Any],
    address: str,
    done: Callable[[int], None],
    warn: Callable[[str], None],
) -> None:
    """Run `tasks` on the Ray cluster at `address` ('auto': the one this machine belongs to; a
    cluster already initialised in this process is used as it is)."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'gtasr-stream[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"--ray {address}: no Ray cluster there ({e})") from None
    gpu = str(engine.get("device", "auto")).startswith("cuda")
    remote = ray.remote(_segment).options(
        num_gpus=1 if gpu else 0,
        num_cpus=1,
        max_retries=RAY_RETRIES,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}},
    )
    pending = [remote.remote(t, engine) for t in tasks]
    try:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            try:
                frames, said = ray.get(finished[0])
            except ray.exceptions.RayTaskError as e:
                cause = e.as_instanceof_cause()
                raise (
                    cause if isinstance(cause, UserError) else UserError(f"--ray: a segment failed: {cause}")
                ) from None
            for msg in said:
                warn(msg)
            done(frames)
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
