"""The one training loop of both GTASR stages (METHOD.md "Stage I" and "Stage II").

Owns: building the model from a preset, the per-step recipe of each stage, EMA and target/frozen
copies, AdamW with its step-halving schedule, bf16 autocast on CUDA, gradient clipping, DDP,
checkpoints, JSONL metrics and sample grids.  The maths lives in gtasr_stream.model (network,
grid, c_skip/c_out, forward process) and training.losses (the loss terms).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gtasr_stream.engines.device import cpu_has_native_bf16, resolve_device
from gtasr_stream.files import atomic_path
from gtasr_stream.model import (
    PRESETS,
    SCALE,
    ConsistencyModel,
    build_network,
    forward_process,
    time_grid,
    upsample_lq,
)
from gtasr_stream.weights import load_weights, save_weights

from .checkpoint import latest_checkpoint, load_checkpoint, resume_checkpoint, save_checkpoint
from .data import PhotoCrops, step_generator
from .degradation import codec_degrade
from .losses import (
    Distance,
    LossWeights,
    charbonnier,
    combine,
    ct_loss,
    dtm_loss,
    grid_loss,
    phase_bias,
    rect_loss,
    ta_loss,
    texture_loss,
    usm_sharpen,
)
from .lpips import LPIPS, load_lpips
from .options import Stage1Options, Stage2Options
from .samples import save_grid, val_crops
from .video_degradation import PROFILES, Profile, degrade_profile

Stage = Literal["stage1", "stage2"]


def lr_at(step: int, base: float, halve_at: int) -> float:
    """Step schedule of METHOD.md: the base rate, halved once at `halve_at`."""
    return base if step < halve_at else base / 2


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the forward passes, or None for plain fp32.

    auto: bf16 where the device computes it natively (CUDA with bf16, CPUs with AMX or AVX512-BF16:
    measured 2.4x faster Stage I steps on a 2-core Sapphire Rapids), fp32 elsewhere.
    """
    if precision != "auto":
        return torch.bfloat16 if precision == "bf16" else None
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    return torch.bfloat16 if native else None


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, rate: float) -> None:
    """theta_ema <- rate * theta_ema + (1 - rate) * theta."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1 - rate)


def _quantise(y: torch.Tensor) -> torch.Tensor:
    """y in [-1,1] rounded to 8-bit levels, as the published training does."""
    return ((y + 1) * 127.5).round() / 127.5 - 1


def training_batches(
    cfg: Stage1Options | Stage2Options,
    data: PhotoCrops,
    start: int,
    rank: int,
    device: torch.device,
    ahead: bool = False,
) -> Iterator[tuple[torch.Generator, torch.Tensor, torch.Tensor]]:
    """(generator, HR, LR) for steps start.. cfg.steps - 1, each made from its step's generator alone,
    which goes on to the step's loss terms (exact resume). HR (B,3,crop,crop) and LR (B,3,crop/4,crop/4)
    in [0,1] on `device`, LR at 8-bit levels.

    ahead=True makes the next step's batch in a thread while the caller trains on this one (the same
    batches: nothing else draws from their generators). train() asks for it on CUDA, where the GPU
    would otherwise wait: degrading a batch of 32 256^2 crops, codecs and all, takes about 0.5 s of a
    CPU core (2-core Xeon). On a CPU the thread would only take cores from the step itself.
    """
    profile = cast(Profile, cfg.degradation)  # degrade_profile refuses any other

    def make(step: int) -> tuple[torch.Generator, torch.Tensor, torch.Tensor]:
        g = step_generator(cfg.seed, step, rank)
        hr = data.batch(cfg.batch, g).to(device)
        lq = degrade_profile(hr, profile, g)
        if cfg.codec_prob and torch.rand((), generator=g) < cfg.codec_prob:
            lq = codec_degrade(lq, g)
        return g, hr, lq

    if not ahead:
        yield from map(make, range(start, cfg.steps))
        return
    with ThreadPoolExecutor(1, thread_name_prefix="gtasr-batches") as pool:
        upcoming = [pool.submit(make, start)] if start < cfg.steps else []
        for step in range(start, cfg.steps):
            if step + 1 < cfg.steps:
                upcoming.append(pool.submit(make, step + 1))
            yield upcoming.pop(0).result()


def batch_terms(
    cfg: Stage1Options | Stage2Options,
    step: int,
    net: torch.nn.Module,  # theta, as trained (maybe DDP-wrapped)
    model: ConsistencyModel,  # theta, unwrapped: the stop-gradient target theta^-
    frozen: ConsistencyModel,  # f_theta' of Stage II
    lpips: Distance,
    x0: torch.Tensor,  # (B,3,H,W) HR in [-1,1]
    lq: torch.Tensor,  # (B,3,H/4,W/4) degraded LR in [-1,1]
    g: torch.Generator,  # this step's randomness
) -> dict[str, torch.Tensor]:
    """The per-sample loss terms of one batch for the stage of `cfg` (METHOD.md)."""
    device, b = x0.device, x0.shape[0]
    y = _quantise(upsample_lq(lq))  # (B,3,H,W)
    n_grid = cfg.grid_n[0] if step < cfg.steps // 2 else cfg.grid_n[1]
    etas = time_grid(n_grid, cfg.grid_power).to(device)
    n = int(torch.randint(n_grid - 1, (1,), generator=g))  # one n per batch, U{0..N-2}
    eps = torch.randn(x0.shape, generator=g).to(device)  # ONE epsilon: x_{n+1} and x_n lie on one trajectory
    eta_hi, eta_lo = etas[n + 1].expand(b), etas[n].expand(b)
    pred = net(forward_process(x0, y, eps, eta_hi), eta_hi, lq).float()  # x0_hat
    with torch.no_grad():  # theta^- = theta under stop-gradient (EMA rate 0); for n = 0 the target is x0
        target = x0 if n == 0 else model(forward_process(x0, y, eps, eta_lo), eta_lo, lq).float()
    terms = {"ct": ct_loss(lpips, pred, target)}
    if cfg.direct_loss > 0:  # the path gtasr-stream --noise none runs: x_T = y, eta = 1
        one = torch.ones(b, device=device)
        out, share = net(y, one, lq).float(), cfg.direct_lpips
        # what every term on `out` aims at: the HR, or Real-ESRGAN's sharpened HR (--gt-usm)
        hr = usm_sharpen(x0, cfg.gt_usm) if cfg.gt_usm > 0 else x0
        terms["direct"] = share * lpips(out, hr) + (1 - share) * charbonnier(out, hr)
        if cfg.grid_loss > 0:
            terms["grid"] = grid_loss(out, hr)
        if cfg.phase_loss > 0:
            terms["phase"] = phase_bias(out, hr)
        if cfg.direct_rect > 0:  # Stage II's structural term, on the output users get
            terms["direct_rect"] = rect_loss(lpips, out, hr)
        if cfg.direct_texture > 0:
            if not isinstance(lpips, LPIPS):
                raise TypeError("--direct-texture needs the LPIPS network's VGG taps")
            terms["direct_texture"] = texture_loss(lambda x: lpips.vgg_taps(x, 3), out, hr)
    if isinstance(cfg, Stage1Options) and cfg.trajectory_alignment:
        terms["ta"] = ta_loss(lpips, x0, pred, y, etas, g)
    if isinstance(cfg, Stage2Options):
        eps_t = torch.randn(x0.shape, generator=g).to(device)  # shared by x_t and z_t
        eta_t = torch.full((b,), cfg.dtm_eta, device=device)
        with torch.no_grad():
            f_z = frozen(forward_process(pred.detach(), y, eps_t, eta_t), eta_t, lq).float()
            f_x = frozen(forward_process(x0, y, eps_t, eta_t), eta_t, lq).float()
        terms["dtm"] = dtm_loss(lpips, pred, x0, f_z, f_x)
        terms["rect"] = rect_loss(lpips, pred, x0, published=cfg.rect_published)
    return terms


def train(
    cfg: Stage1Options | Stage2Options,
    stage: Stage,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Path:
    """Run one stage to cfg.steps; returns the path of the final EMA weights (cfg.out/ema.safetensors).

    Bad flags and inputs found before the first step are a ValueError or UserError of one line.
    """
    # 1. processes and device
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    if ddp:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = (
            torch.device(f"cuda:{local}")
            if torch.cuda.is_available() and cfg.device != "cpu"
            else torch.device("cpu")
        )
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    else:
        device = resolve_device(cfg.device)
    warn = on_warning if on_warning is not None and rank == 0 else (lambda msg: None)
    unit = SCALE * PRESETS[cfg.preset].multiple if cfg.preset in PRESETS else 1  # unknown: build_network says
    if cfg.crop % unit:  # the LR crop must tile the network's windows (the assert deep in its forward)
        raise ValueError(f"--crop {cfg.crop}: the {cfg.preset} preset takes multiples of {unit}")
    on_direct = {
        "--grid-loss": cfg.grid_loss,
        "--phase-loss": cfg.phase_loss,
        "--direct-rect": cfg.direct_rect,
        "--direct-texture": cfg.direct_texture,
        "--gt-usm": cfg.gt_usm,
    }
    if cfg.direct_loss <= 0 and (unused := [flag for flag, w in on_direct.items() if w > 0]):
        raise ValueError(f"{', '.join(unused)}: weight terms on the noise-free output; add --direct-loss W")
    if not cfg.resume and (last := latest_checkpoint(cfg.out / "checkpoints")) is not None:
        # a fresh run there would mix its checkpoints with the old run's, and keeping the newest two
        # by step would delete its own as soon as it wrote them
        raise ValueError(
            f"--out {cfg.out} holds the checkpoints of a run (newest {last.name}): --resume continues it, "
            "another --out starts afresh"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # 2. model, EMA, optimiser, losses
    torch.manual_seed(cfg.seed)  # the initial weights
    model = ConsistencyModel(build_network(cfg.preset)).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    lpips = load_lpips(cfg.lpips).to(device)
    for module in (model, ema, lpips):  # faster convolutions on CPUs (oneDNN) and tensor cores alike
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    weights = LossWeights(
        direct=cfg.direct_loss,
        grid=cfg.grid_loss,
        phase=cfg.phase_loss,
        direct_rect=cfg.direct_rect,
        direct_texture=cfg.direct_texture,
    )
    if cfg.degradation not in PROFILES:
        raise ValueError(f"--degradation must be one of {', '.join(PROFILES)}, got {cfg.degradation!r}")
    ckpt_dir = cfg.out / "checkpoints"
    start = 0
    state = resume_checkpoint(ckpt_dir, cfg.preset, model, ema, opt, warn) if cfg.resume else None
    if state is not None:
        start = state["step"]
    elif cfg.init is not None:
        _warm_start(cfg.init, cfg.preset, model, ema)
    elif isinstance(cfg, Stage2Options):
        raise ValueError("--init: stage2 starts from a Stage I run folder or checkpoint")
    frozen = copy.deepcopy(ema).eval().requires_grad_(False)  # f_theta' (Stage II), from the EMA
    net: torch.nn.Module = DistributedDataParallel(model) if ddp else model
    data = PhotoCrops(cfg.data, cfg.crop, warn)
    val = val_crops(cfg.val, cfg.crop, device, warn) if cfg.val and rank == 0 else None
    amp = autocast_dtype(cfg.precision, device)
    autocast = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
    cfg.out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _truncate_metrics(cfg.out / "metrics.jsonl", start, warn)  # a killed run logged past its checkpoint
    log = (cfg.out / "metrics.jsonl").open("a") if rank == 0 else None
    board = _tensorboard(cfg.out) if rank == 0 else None
    if rank == 0:
        (cfg.out / f"{stage}_options.json").write_text(
            json.dumps(dataclasses.asdict(cfg), default=str, indent=1)
        )
    t0 = time.perf_counter()
    batches = training_batches(cfg, data, start, rank, device, ahead=device.type == "cuda")
    for step, (g, hr, lq) in zip(range(start, cfg.steps), batches, strict=True):
        # 3. one batch, every random number from this step's generator (exact resume)
        torch.manual_seed(cfg.seed * 7919 + step)  # dropout
        x0, lq = hr * 2 - 1, lq * 2 - 1  # model space [-1,1]
        # 4. the stage's loss terms
        with autocast:
            terms = batch_terms(cfg, step, net, model, frozen, lpips, x0, lq, g)
            loss, logged = combine(terms, weights)
        # 5. update theta, the EMA and (Stage II) the frozen copy
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.lr_halve_at)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, model, cfg.ema)
        if isinstance(cfg, Stage2Options) and (step + 1) % cfg.frozen_reset == 0:
            frozen.load_state_dict(model.state_dict())
        # 6. logs, samples, checkpoints (rank 0 writes)
        done = step + 1
        logged |= {"loss": loss.item(), "grad_norm": grad_norm.item(), "lr": opt.param_groups[0]["lr"]}
        if log and (done % cfg.log_every == 0 or done == cfg.steps):
            log.write(
                json.dumps({"step": done, "stage": stage, "time": time.perf_counter() - t0, **logged}) + "\n"
            )
            log.flush()
            if board is not None:
                for key, value in logged.items():
                    board.add_scalar(f"{stage}/{key}", value, done)
        if rank == 0 and val is not None and (done % cfg.sample_every == 0 or done == cfg.steps):
            save_grid(cfg.out / "samples" / f"{stage}_{done:08d}.png", ema, val)
        if rank == 0 and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            save_checkpoint(ckpt_dir, done, model, ema, opt, cfg.preset, _provenance(cfg, stage, done), {})
        if on_step:
            on_step(done, logged)
    # 7. the inference artifact: EMA weights only, in the runtime's format
    final = cfg.out / "ema.safetensors"
    if rank == 0:
        save_weights(final, ema.net, cfg.preset, _provenance(cfg, stage, cfg.steps), extra=_extra(cfg, stage))
    if log:
        log.close()
    if board is not None:
        board.close()
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return final


def _warm_start(init: Path, preset: str, model: ConsistencyModel, ema: ConsistencyModel) -> None:
    """theta and the EMA from --init: a weights file, a checkpoint folder or a run folder (fresh AdamW)."""
    if init.is_file():
        net, _ = load_weights(init, preset=preset)
        for target in (model, ema):
            target.net.load_state_dict(net.state_dict())
        return
    found = init if (init / "state.json").is_file() else latest_checkpoint(init / "checkpoints")
    if found is None:
        raise ValueError(f"--init: no checkpoint in '{init}'")
    load_checkpoint(found, preset, model, ema, None)


def _truncate_metrics(path: Path, step: int, warn: Callable[[str], None]) -> None:
    """Keep only the lines of steps <= step, so that a resumed run logs each step once.  A line that
    is not a whole record (the last one of a run killed while writing it) is dropped with a warning."""
    if not path.is_file():
        return
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    kept, torn = [], []
    for number, line in enumerate(lines, 1):
        try:
            logged = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            torn.append(number)
            continue
        if logged <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if torn:
        warn(f"{path}: dropped line {', '.join(map(str, torn))} of {len(lines)}, not a whole record")
    if kept != lines:
        with atomic_path(path) as tmp:
            tmp.write_text("".join(kept))


def _tensorboard(folder: Path) -> Any:
    """A SummaryWriter into folder/tensorboard when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder / "tensorboard"))


def _provenance(cfg: Stage1Options | Stage2Options, stage: Stage, step: int) -> str:
    return f"gtasr-train {stage} on '{cfg.data.name}', {step} steps of batch {cfg.batch}, seed {cfg.seed}"


def _extra(cfg: Stage1Options | Stage2Options, stage: Stage) -> dict[str, str]:
    return {"stage": stage, "options": json.dumps(dataclasses.asdict(cfg), default=str)}
