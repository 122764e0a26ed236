"""Long videos: upscale in segments kept in a work folder beside OUT, resume after a crash, spread the
segments over several devices (worker processes) or a Ray cluster, then join them into OUT.

The work folder `OUT.gtasr-segments/` holds `manifest.json` (what a resume must match: the input's
size and the hashes of its first and last MiB, the weights' hash, every flag that changes the pixels
or the file, the segment plan) and one `seg-NNNNN.nut` per finished segment, each written to a
temporary name and renamed when complete, so a file there is a whole segment.  The same command
after a crash redoes only the segments without a file; a folder made by another input, weights or
flags is refused (`--restart` throws it away).  After OUT is written the folder is removed.
Segments run one after the other on one device, on several devices at once (one worker process per
device, `concurrent.futures`), or as Ray tasks (Ray retries a task whose worker died); no scheduler
of our own.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import __version__
from .engines.upscaler import Upscaler
from .errors import UserError
from .files import atomic_path, final_path, is_stream_target
from .pipeline import Stats
from .segment_task import Task, run_task
from .video.cut import Cut
from .video.segments import Plan, join, origin_of, plan, segment_cut, segment_format
from .video.writer import EncodeOptions, check_output_path, image_encoder
from .weights import model_weights

WORK_SUFFIX = ".gtasr-segments"
MANIFEST = "manifest.json"
AUTO_SEGMENT = 60.0  # seconds of video per segment when --segment is not given
AUTO_ABOVE = 600.0  # ... for inputs (or cuts) longer than this; shorter ones go in one pass
# Upscaler flags that change the pixels; device and batch do not (only how fast they come).
_ENGINE_KEYS = (
    "weights",
    "model_name",
    "denoise",
    "precision",
    "tile",
    "tile_pad",
    "noise",
    "sharpen",
    "seed",
    "backend",
)


def devices_of(device: str) -> list[str]:
    """-d/--device as a list: 'cuda:0,cuda:1', 'cpu,cpu' (two CPU workers) or 'cuda:all'."""
    if device == "cuda:all":
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise UserError("-d/--device cuda:all: no CUDA device here")
        return [f"cuda:{i}" for i in range(count)]
    names = [d.strip() for d in device.split(",")]
    if "" in names:
        raise UserError(f"-d/--device '{device}': an empty name in the list")
    return names


def work_folder(dst: str) -> Path:
    out = final_path(dst)
    return out.with_name(out.name + WORK_SUFFIX)


def segment_seconds(
    src: str, dst: str | None, flag: float | None, cut: Cut | None, several: bool
) -> float | None:
    """Seconds per segment for this job, or None for one pass.

    flag: --segment (None: auto, 0: never).  several: more than one device, or Ray.
    """
    fits = (
        dst is not None
        and dst != "-"
        and not is_stream_target(dst)
        and image_encoder(dst, None) is None
        and src != "-"
        and "://" not in src
    )
    what = "several devices and --ray" if several else "--segment"
    if flag is not None and flag < 0:
        raise UserError(f"--segment: {flag} seconds; give a length above 0 (0: one pass)")
    if not fits and (several or flag):
        raise UserError(f"{what}: IN and OUT must be files (not a pipe, URL or image)")
    if flag == 0 and several:
        raise UserError("--segment 0 (one pass) leaves nothing to share among several devices or --ray")
    if flag:
        return flag
    if not fits or flag == 0:
        return None
    if several:
        return AUTO_SEGMENT
    length = _length(src, cut)
    return AUTO_SEGMENT if length is not None and length > AUTO_ABOVE else None


def _length(src: str, cut: Cut | None) -> float | None:
    """Seconds of video the job covers, from the container's header (cheap; None if unknown)."""
    import av

    try:
        with av.open(src) as c:
            total = c.duration / 1_000_000 if c.duration else None  # AV_TIME_BASE
    except (av.FFmpegError, OSError):
        return None  # the pipeline says what is wrong with it
    if cut is not None and cut.end is not None:
        return float(cut.end - (cut.start or 0))
    if total is not None and cut is not None and cut.start is not None:
        return total - float(cut.start)
    return total


def upscale_segmented(
    src: str,
    dst: str,
    *,
    seconds: float,
    engine: dict[str, Any],
    encode: EncodeOptions,
    outscale: float = 4.0,
    hwaccel: Any = "auto",
    cut: Cut | None = None,
    upscaler: Upscaler | None = None,
    devices: list[str] | None = None,
    ray_address: str | None = None,
    restart: bool = False,
    overwrite: bool = False,
    on_progress: Callable[[Stats], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Stats:
    """`upscale_video` for long inputs: segments in a work folder, resumable; see the module docstring.

    upscaler: runs the segments here when neither several `devices` nor `ray_address` are given.
    engine: the Upscaler keyword arguments, for the workers (and the manifest).
    """
    said: set[str] = set()

    def warn(msg: str) -> None:  # every segment says the same things: once is enough
        if msg not in said and on_warning is not None:
            said.add(msg)
            on_warning(msg)

    # 1. what can be checked before any work
    check_output_path(dst, src, overwrite)
    segs = plan(src, cut, seconds)
    if segs is None:
        raise UserError(
            f"input '{src}' has no presentation times to cut it by; --segment 0 upscales it in one pass"
        )
    folder = work_folder(dst)
    manifest = _manifest(src, engine, encode, outscale, cut, seconds, segs)
    # 2. the work folder: resumed, started or refused
    _prepare(folder, manifest, restart)
    stats = Stats(total=sum(s.frames for s in segs.segments))
    origin = origin_of(src)
    ext = segment_format(encode.codec)
    encode_seg = EncodeOptions(
        **{**asdict(encode), "container_format": ext, "copy_audio": False, "copy_subtitles": False}
        | {"copy_data": False}
    )
    tasks = []
    for seg in segs.segments:
        if (folder / seg.name(ext)).exists():
            stats.encoded += seg.frames  # done by an earlier run
        else:
            task = Task(
                src,
                str(folder / seg.name(ext)),
                segment_cut(seg, cut, origin),
                seg.frames,
                encode_seg,
                outscale,
                hwaccel,
            )
            tasks.append(task)
    stats.upscaled = stats.decoded = stats.encoded
    if on_note is not None:
        count = len(segs.segments)
        kept = count - len(tasks)
        how = f"resuming: {kept} of {count} segments already done" if kept else f"{count} segments"
        on_note(f"{how} in '{folder}'")

    # 3. the segments
    def done(frames: int) -> None:
        stats.encoded += frames
        stats.upscaled = stats.decoded = stats.encoded
        stats.elapsed = time.perf_counter() - stats.started
        if on_progress:
            on_progress(stats)

    if ray_address is not None:
        from .ray_tasks import run_on_ray

        run_on_ray(tasks, {**engine, "device": (devices or ["auto"])[0]}, ray_address, done, warn)
    elif devices is not None and len(devices) > 1:
        _run_pool(tasks, engine, devices, done, warn)
    else:
        up = upscaler or Upscaler(**engine, on_warning=warn)
        for task in tasks:
            base = stats.encoded

            def progress(s: Stats, base: int = base) -> None:  # frames within the segment, too
                stats.encoded = stats.upscaled = stats.decoded = base + s.encoded
                stats.busy, stats.codec, stats.decoder = s.busy, s.codec, s.decoder
                stats.elapsed = time.perf_counter() - stats.started
                if on_progress:
                    on_progress(stats)

            run_task(task, up, warn, progress)
            stats.encoded = base
            done(task.frames)
    # 4. OUT from the segments, then the folder goes
    parts = [str(folder / s.name(ext)) for s in segs.segments]
    cuda = any(str(d).startswith("cuda") for d in [*(devices or []), engine.get("device", "")])
    written, stats.codec, stats.out_size = join(
        src, dst, parts, encode, cut, segs.segments[-1].end, cuda, overwrite, warn
    )
    shutil.rmtree(folder, ignore_errors=True)
    stats.encoded = stats.upscaled = stats.decoded = written
    stats.elapsed = time.perf_counter() - stats.started
    return stats


def _hash_ends(path: str) -> tuple[int, str, str]:
    """Size and SHA-256 of the first and the last MiB: a changed or other file, without reading hours of video."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
        f.seek(max(0, size - (1 << 20)))
        tail = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return size, head, tail


def _weights_hash(engine: dict[str, Any]) -> str:
    """SHA-256 of the weight files the flags name (--denoise blends two, its value is in the flags)."""
    if engine.get("weights"):
        files = [Path(engine["weights"])]
    elif engine.get("denoise") is not None:
        files = [model_weights("video"), model_weights("restore")]
    else:
        files = [model_weights(engine.get("model_name") or "video")]
    h = hashlib.sha256()
    for f in files:
        try:
            with open(f, "rb") as fh:
                while block := fh.read(1 << 24):
                    h.update(block)
        except OSError as e:
            raise UserError(f"--weights: '{f}' cannot be read ({e.strerror})") from None
    return h.hexdigest()


def _manifest(
    src: str,
    engine: dict[str, Any],
    encode: EncodeOptions,
    outscale: float,
    cut: Cut | None,
    seconds: float,
    segs: Plan,
) -> dict[str, Any]:
    size, head, tail = _hash_ends(src)
    return {
        "input": {"size": size, "first_mib_sha256": head, "last_mib_sha256": tail},
        "weights_sha256": _weights_hash(engine),
        "flags": {
            **{k: engine.get(k) for k in _ENGINE_KEYS},
            "encode": asdict(encode),
            "outscale": outscale,
            "cut": None if cut is None else {k: str(v) for k, v in asdict(cut).items()},
            "segment": seconds,
            "version": __version__,
        },
        "segments": [[str(s.start), str(s.end), s.frames] for s in segs.segments],
        "input_path": str(Path(src).resolve()),  # for the reader; not compared (a moved file resumes)
    }


def _prepare(folder: Path, manifest: dict[str, Any], restart: bool) -> None:
    compared = ("input", "weights_sha256", "flags", "segments")
    if restart and folder.exists():
        shutil.rmtree(folder)
    if folder.exists():
        try:
            old = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            old = None
        if old is None and any(not n.startswith(("seg-", ".seg-")) for n in os.listdir(folder)):
            raise UserError(f"work folder '{folder}' exists and is not ours; move it away")
        if old is not None:
            differ = [k for k in compared if old.get(k) != manifest[k]]
            if differ:
                raise UserError(
                    f"work folder '{folder}' holds segments of another run (its {', '.join(differ)} differ);"
                    " --restart throws it away"
                )
            return
    folder.mkdir(exist_ok=True)
    with atomic_path(folder / MANIFEST, ".json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))


# -- several devices on this machine: one worker process per device --------------------------------

_worker: dict[str, Any] = {}


def _init_worker(devices: Any, engine: dict[str, Any], count: int) -> None:
    device = devices.get()
    if device == "cpu":
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // count))  # the cores are shared out
    _worker["engine"] = {**engine, "device": device}


def _worker_task(task: Task) -> tuple[int, list[str]]:
    said: list[str] = []
    if "up" not in _worker:
        _worker["up"] = Upscaler(**_worker["engine"], on_warning=said.append)
    up = _worker["up"]
    up.warn = said.append
    return run_task(task, up, said.append), said


def _run_pool(
    tasks: list[Task],
    engine: dict[str, Any],
    devices: list[str],
    done: Callable[[int], None],
    warn: Callable[[str], None],
) -> None:
    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's threads
    queue = ctx.Queue()
    for d in devices:
        queue.put(d)
    with ProcessPoolExecutor(len(devices), ctx, _init_worker, (queue, engine, len(devices))) as pool:
        pending = {pool.submit(_worker_task, t) for t in tasks}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in finished:
                    frames, said = f.result()
                    for msg in said:
                        warn(msg)
                    done(frames)
        except BaseException:
            for f in pending:
                f.cancel()  # segments not started stay undone; those running finish and are kept
            raise
