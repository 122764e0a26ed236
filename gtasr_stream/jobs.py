"""Which file goes where when `gtasr-stream` gets several inputs, a folder, or `-o DIR`.

Pure path logic (no decoding), so every mistake is found before the model loads: an input folder
with nothing to upscale, two inputs that would write the same output, an output folder that is a
file.  Each output keeps its input's name and extension (the container that held its streams).
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

# What a folder of inputs is searched for (its other files, e.g. subtitles or notes, are left alone).
MEDIA_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg", ".flv", ".wmv"}
    | {".3gp", ".ogv", ".y4m", ".gif", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
)


def media_in(folder: Path) -> list[Path]:
    """The videos and images directly inside `folder`, sorted by name (hidden files skipped)."""
    found = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES and not p.name.startswith(".")
    )
    if not found:
        raise UserError(
            f"input folder '{folder}' has no video or image files (by extension: .mp4, .mkv, .png, ...)"
        )
    return found


def plan(inputs: list[str], output: str | None) -> list[tuple[str, str | None]]:
    """(IN, OUT) pairs: one IN and a file OUT as given; several INs or a folder IN write into folder OUT.

    OUT None (--benchmark) writes nothing.  A missing output folder is created.
    """
    srcs: list[str] = []
    folder_in = False
    for src in inputs:
        if src != "-" and "://" not in src and Path(src).is_dir():
            srcs += [str(p) for p in media_in(Path(src))]
            folder_in = True
        else:
            srcs.append(src)
    if output is None:
        return [(s, None) for s in srcs]
    out = Path(output)
    if len(srcs) == 1 and not folder_in and not out.is_dir() and not output.endswith("/"):
        return [(srcs[0], output)]
    if output == "-":
        raise UserError("output '-': several inputs need an output folder (-o DIR)")
    if not out.exists() and out.suffix.lower() in MEDIA_SUFFIXES:  # a file name: surely not meant as a folder
        what = f"input '{inputs[0]}' is a folder" if folder_in and len(inputs) == 1 else "several inputs"
        raise UserError(f"{what}: OUT must be a folder (-o DIR), not the file name '{output}'")
    if out.exists() and not out.is_dir():
        raise UserError(
            f"output '{output}' is a file: with several inputs or an input folder, OUT is a folder"
        )
    jobs: list[tuple[str, str | None]] = []
    seen: dict[str, str] = {}
    for src in srcs:
        if src == "-" or "://" in src:
            raise UserError(f"input '{src}': stdin and URLs go one at a time (no output name to give them)")
        name = Path(src).name
        if name in seen:
            raise UserError(f"inputs '{seen[name]}' and '{src}' would both write '{out / name}'")
        seen[name] = src
        jobs.append((src, str(out / name)))
    out.mkdir(parents=True, exist_ok=True)
    return jobs
