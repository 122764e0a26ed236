"""Shared fixtures: a small random-weight model file, the shared data folder, the CLI runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 'tiny' preset with seeded random weights (the runtime must not care that it is untrained)."""
    from gtasr_stream.model import build_network
    from gtasr_stream.weights import save_weights

    torch.manual_seed(0)
    net = build_network("tiny")
    with torch.no_grad():  # zero-initialised layers would make every block an identity
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, net, "tiny", "random weights for tests")
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a fresh clone has no ../shared; CI has it)")
    return SHARED


def run_cli(
    *args: str | Path, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run `gtasr-stream` as a user would, in a child process."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "gtasr_stream", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def model(tiny_weights: Path):  # -> ConsistencyModel (imported lazily: torch-heavy)
    """The tiny test model, loaded once per module."""
    from gtasr_stream.model import ConsistencyModel
    from gtasr_stream.weights import load_weights

    net, _ = load_weights(tiny_weights)
    return ConsistencyModel(net).eval()


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stands in for $XDG_CACHE_HOME (exported graphs and compiled packages go under it)."""
    return tmp_path_factory.mktemp("xdg_cache")


def decode_frames(path: Path) -> list[tuple[int, np.ndarray]]:
    """(pts, planes as int16) of every video frame of `path`."""
    with av.open(str(path)) as c:
        return [(f.pts, f.to_ndarray().astype(np.int16)) for f in c.decode(video=0)]


def max_code_difference(got: list[tuple[int, np.ndarray]], ref: list[tuple[int, np.ndarray]]) -> int:
    """Largest 8-bit code-value difference between two decodes with the same timestamps."""
    assert [p for p, _ in got] == [p for p, _ in ref]
    return max(int(np.abs(a - b).max()) for (_, a), (_, b) in zip(got, ref, strict=True))


def sigint_as_in_a_shell() -> None:
    """preexec_fn for CLI subprocesses whose Ctrl-C is tested: SIGINT at its default, as a terminal
    starts a command. Python keeps SIGINT ignored in a child that inherits it ignored, and code run
    earlier in this pytest process (a compile worker pool's initialiser, say) can leave it so."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
