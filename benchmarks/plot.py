"""The throughput figure: frames/s against input size (log-log), one line per model, backend and
precision at its best batch; peers dashed. matplotlib is optional (the `bench` extra)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from training.peers import PEER_FILES

BASELINES = ("bicubic", *PEER_FILES)


def plot(doc: dict[str, Any], path: Path) -> str | None:
    """fps vs LR pixels (log-log), one line per model/backend/precision at its best batch; the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)
        return None
    best: dict[tuple[str, str, str], dict[tuple[int, int], float]] = {}
    for c in doc["cases"]:
        if c["status"] == "ok":
            line = best.setdefault((c["model"], c["backend"], c["precision"]), {})
            size = tuple(c["lr_size"])
            line[size] = max(line.get(size, 0.0), c["fps"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (model, backend, precision), points in sorted(best.items()):
        sizes = sorted(points, key=lambda s: s[0] * s[1])
        style = "--" if model in BASELINES else "-"
        ax.plot(
            [w * h for w, h in sizes],
            [points[s] for s in sizes],
            style,
            marker="o",
            label=f"{model} ({backend}, {precision})",
        )
    all_sizes = sorted(
        {tuple(c["lr_size"]) for c in doc["cases"] if c["status"] == "ok"}, key=lambda s: s[0] * s[1]
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([w * h for w, h in all_sizes], [f"{w}×{h}" for w, h in all_sizes])
    ax.minorticks_off()
    ax.set_xlabel("input size (output is 4× each side)")
    ax.set_ylabel("frames/s (best batch, median)")
    ax.set_title(f"Model-only throughput, {doc['env']['device_name']}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if best:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
