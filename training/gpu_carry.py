"""A training run on a lent GPU (the device tool): what to carry there, and the run itself.

A device call carries the working tree plus named ignored folders, 64 MiB in all, and the GPU image
has no PyAV (GPU.md). A `video`-profile fine-tune needs the PyAV wheel (37 MB), LPIPS-VGG (59 MB;
29 MB in fp16, which `load_lpips` reads back as float32) and the photos (36 MB train, 7 MB val), so
it travels over three calls on one warm machine (ignored folders already there stay between calls):

    python -m training.gpu_carry prepare            # here: .gpu/train_a and .gpu/train_b, sizes checked
    # call 1: carry .gpu/whl (benchmarks.gpu_check --prepare), pip unpacks it into .gpu/site
    # call 2: carry .gpu/train_a (LPIPS fp16, val photos): a short smoke run on the val photos
    # call 3: carry .gpu/train_b (train photos): the run, under a time limit
    python -m training.gpu_carry train --seconds 420 -- --gt-usm 0.12    # on the device, calls 2 and 3

`train` runs `gtasr-train stage1` from the shipped `video` file with the shipped run's flags (plus
any given after `--`), at batch 32 on 256-pixel crops, until --seconds, then copies the newest EMA
snapshots (one per --every steps) and metrics.jsonl to --out ($OUT): 8 files at most come back.
The exact calls are in benchmarks/NOTES.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CALL_LIMIT = 64 * 2**20  # what one device call carries, the working tree included
SNAPSHOTS = 6  # EMA files brought back (with metrics.jsonl and train.log: 8, the most that comes back)
# the shipped video file's own run (its metadata), at a GPU's batch and 256-pixel crops
VIDEO_FLAGS = [
    "--degradation",
    "video",
    "--direct-loss",
    "1",
    "--direct-lpips",
    "0.9",
    "--direct-rect",
    "6",
    "--grid-loss",
    "0.5",
    "--phase-loss",
    "0.1",
    "--no-ta",
    "--lr",
    "5e-5",
    "--ema",
    "0.995",
    "--batch",
    "32",
    "--crop",
    "256",
]


def tree_bytes(repo: Path) -> int:
    """Bytes of what every call sends: tracked files and untracked ones git does not ignore."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    return sum((repo / n.decode()).stat().st_size for n in names if n and (repo / n.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _copy_tree(src: Path, dst: Path) -> None:
    if not src.is_dir():
        raise click.ClickException(f"{src}: not found (the shared data folder)")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


def prepare(shared: Path, into: Path, repo: Path) -> dict[str, int]:
    """Write into/train_a (LPIPS-VGG in fp16, the val photos) and into/train_b (the train photos);
    returns each call's bytes, tree included. Raises ClickException where one would not fit."""
    from safetensors.torch import load_file, save_file

    a, b = into / "train_a", into / "train_b"
    a.mkdir(parents=True, exist_ok=True)
    lpips = shared / "weights" / "lpips_vgg16.safetensors"
    if not lpips.is_file():
        raise click.ClickException(f"{lpips}: not found (LPIPS-VGG, training's perceptual loss)")
    save_file(
        {k: v.half().contiguous() for k, v in load_file(str(lpips)).items()},
        str(a / "lpips_vgg16_fp16.safetensors"),
    )
    _copy_tree(shared / "photos" / "val", a / "val")
    _copy_tree(shared / "photos" / "train", b / "train")
    tree = tree_bytes(repo)
    sizes = {str(f.relative_to(repo)): tree + folder_bytes(f) for f in (a, b)}
    for name, size in sizes.items():
        if size > CALL_LIMIT:
            raise click.ClickException(
                f"{name}: {size / 2**20:.1f} MiB with the working tree, over the {CALL_LIMIT // 2**20} MiB a call carries"
            )
    return sizes


def _snapshots(run: Path, out: Path, every: int, stop: threading.Event) -> None:
    """Copy each checkpoint's EMA whose step is a multiple of `every` to out/ema_<step>.safetensors
    (the trainer keeps only its newest checkpoints), keeping the newest SNAPSHOTS."""
    while True:
        last = stop.is_set()  # one more pass after the trainer has ended
        for ckpt in sorted((run / "checkpoints").glob("step_*")):
            step = int(ckpt.name.split("_")[1])
            dst = out / f"ema_{step:06d}.safetensors"
            if step % every == 0 and not dst.exists() and (ckpt / "ema.safetensors").is_file():
                try:
                    shutil.copyfile(ckpt / "ema.safetensors", dst.with_suffix(".partial"))
                    os.replace(dst.with_suffix(".partial"), dst)
                except FileNotFoundError:  # rotated away while copying
                    dst.with_suffix(".partial").unlink(missing_ok=True)
        for old in sorted(out.glob("ema_*.safetensors"))[:-SNAPSHOTS]:
            old.unlink()
        if last:
            return
        stop.wait(2.0)


def train(
    run: Path, out: Path, seconds: float, every: int, extra: tuple[str, ...], env: dict[str, str]
) -> int:
    """stage1 from the shipped video file (or --resume of `run`) until `seconds` pass; a SIGINT then
    ends it as Ctrl-C does (its checkpoints are atomic). Returns the trainer's exit code."""
    out.mkdir(parents=True, exist_ok=True)
    start = (
        ["--resume"]
        if (run / "checkpoints").is_dir()
        else ["--init", str(REPO / "gtasr_stream/checkpoints/video.safetensors")]
    )
    cmd = [sys.executable, "-m", "training", "stage1", *VIDEO_FLAGS, "--out", str(run)]
    cmd += ["--checkpoint-every", str(every), "--sample-every", "1000000", *start, *extra]
    stop = threading.Event()
    copier = threading.Thread(target=_snapshots, args=(run, out, every, stop), daemon=True)
    copier.start()
    with (out / "train.log").open("w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
    stop.set()
    copier.join()
    if (run / "metrics.jsonl").is_file():
        shutil.copyfile(run / "metrics.jsonl", out / "metrics.jsonl")
    return code


@click.group()
def main() -> None:
    """Carry a training run to a lent GPU and run it there (see the module's docstring)."""


@main.command("prepare")
@click.option("--shared", type=click.Path(file_okay=False, path_type=Path), default=SHARED, show_default=True)
@click.option(
    "--into", type=click.Path(file_okay=False, path_type=Path), default=REPO / ".gpu", show_default=True
)
def prepare_cmd(shared: Path, into: Path) -> None:
    """Here: LPIPS fp16 and the val photos into INTO/train_a, the train photos into INTO/train_b."""
    for name, size in prepare(shared, into.resolve(), REPO).items():
        click.echo(f"{name}: {size / 2**20:.1f} MiB with the working tree")


@main.command("train", context_settings={"ignore_unknown_options": True})
@click.option("--seconds", type=click.FloatRange(1), default=420, show_default=True)
@click.option(
    "--every", type=click.IntRange(1), default=100, show_default=True, help="Steps between snapshots."
)
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=REPO / ".gpu/train_b/train")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=REPO / ".gpu/run")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Default: $OUT.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def train_cmd(
    seconds: float, every: int, data: Path, run_dir: Path, out: Path | None, extra: tuple[str, ...]
) -> None:
    """There: stage1 from the shipped video file until --seconds; EXTRA goes to gtasr-train stage1."""
    target = out or Path(os.environ.get("OUT", "out"))
    a = REPO / ".gpu/train_a"
    flags = ("--data", str(data), "--val", str(a / "val"), "--lpips", str(a / "lpips_vgg16_fp16.safetensors"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / ".gpu/site"), str(REPO), env.get("PYTHONPATH")])
    )
    started = time.monotonic()
    code = train(run_dir, target, seconds, every, (*flags, *extra), env)
    names = sorted(p.name for p in target.iterdir())
    click.echo(f"trainer exit {code} after {time.monotonic() - started:.0f} s; {target}: {', '.join(names)}")


if __name__ == "__main__":
    main()
