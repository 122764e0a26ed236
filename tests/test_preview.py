"""`gtasr-stream preview`: the latest-frame hand-off, capture, the HTTP endpoints, a real browser, errors.

The end-to-end tests run the command as a user would, on an FFmpeg lavfi test source with the tiny
random-weight model on the CPU, at 64x48 so that two loaded cores keep up.  The browser test drives
Debian's headless Chromium through Selenium (installed by .ci/run) and skips, saying why, without it.
"""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import REPO, sigint_as_in_a_shell
from media import make_clip
from PIL import Image

from gtasr_stream.cli import main
from gtasr_stream.engines.device import resolve_dtype
from gtasr_stream.preview.slot import Latest
from gtasr_stream.preview.source import Capture, device_error, open_source, parse_source, read_packets

LAVFI = "lavfi:testsrc2=size=64x48:rate=30"


# -- the latest-frame slot and the capture loop (in process) ---------------------------------------


def test_latest_slot_overwrites_counts_drops_and_wakes_readers():
    slot: Latest[str] = Latest()
    assert slot.take(timeout=0.01) is None and slot.wait_newer(0, 0.01) is None
    slot.put("a")
    slot.put("b")  # "a" was never taken: dropped
    assert slot.take(timeout=0.01) == "b" and slot.dropped == 1
    assert slot.take(timeout=0.01) is None  # taken items are not handed out twice
    slot.put("c")
    assert slot.dropped == 1  # "b" had been taken
    assert slot.wait_newer(2, 0.01) == (3, "c")
    assert slot.wait_newer(3, 0.01) == (3, "c")  # nothing newer: the newest, with its old number
    threading.Timer(0.1, slot.put, ["d"]).start()
    t = time.monotonic()
    assert slot.wait_newer(3, 5.0) == (4, "d")
    assert time.monotonic() - t < 2  # woken by the put, not by the timeout
    assert slot.take(timeout=0.01) == "d"
    threading.Timer(0.1, slot.close).start()
    assert slot.take(timeout=5.0) is None  # close wakes a waiting consumer


class _FakeDevice:
    """demux() raises EAGAIN on its first two calls, as a live V4L2 device with no frame ready does."""

    def __init__(self) -> None:
        self.calls = 0

    def demux(self, stream: object) -> Iterator[object]:
        self.calls += 1
        if self.calls <= 2:
            raise av.error.BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        yield from (_Packet(1), _Packet(0), _Packet(2))


@dataclass
class _Packet:
    size: int


def test_read_packets_retries_eagain_and_skips_end_markers():
    dev = _FakeDevice()
    got = list(read_packets(dev, None, threading.Event(), retry_s=0.001))
    assert [p.size for p in got] == [1, 2] and dev.calls == 3


def test_read_packets_raises_other_errors():
    class Broken:
        def demux(self, stream: object) -> Iterator[object]:
            raise av.error.OSError(errno.ENODEV, "No such device")
            yield

    with pytest.raises(OSError, match="No such device"):
        list(read_packets(Broken(), None, threading.Event()))


def _capture(src: str, seconds: float, fps: float | None = None, consume_every: float = 0.0):
    """Run the capture loop for `seconds`; returns (times taken from the slot, frames put, slot)."""
    source = parse_source(src)
    container, stream = open_source(source, None, None, print)
    slot: Latest = Latest()
    put = []
    cap = Capture(source, container, stream, slot, fps, print, put.append)
    stop = threading.Event()
    th = threading.Thread(target=cap.run, args=(stop,))
    th.start()
    taken = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        c = slot.take(timeout=0.05)
        if c is not None:
            taken.append(c.t)
            time.sleep(consume_every)
    stop.set()
    th.join(5)
    container.close()
    assert not th.is_alive()
    return taken, put, slot


def test_capture_rebases_paces_and_drops_for_a_slow_consumer():
    # timestamps start at 100 s in the graph; a test source decodes thousands of frames a second
    taken, put, slot = _capture("lavfi:testsrc2=size=32x24:rate=40,setpts=PTS+100/TB", 1.0)
    assert taken[0] == 0.0 and all(b > a for a, b in itertools.pairwise(taken))
    assert 25 <= len(put) <= 50, len(put)  # paced to 40 fps, not as fast as it decodes
    # a consumer slower than the source: the surplus is dropped and counted, nothing queues up
    taken, put, slot = _capture("lavfi:testsrc2=size=32x24:rate=40", 1.0, consume_every=0.2)
    assert len(taken) <= 7 and slot.dropped >= 25
    assert len(put) - len(taken) - slot.dropped in (0, 1)  # each frame taken, dropped or still waiting


def test_capture_caps_the_rate_and_loops_a_file(tmp_path):
    taken, _, _ = _capture("lavfi:testsrc2=size=32x24:rate=40", 1.0, fps=10)
    assert 7 <= len(taken) <= 12, taken
    assert min(b - a for a, b in itertools.pairwise(taken)) > 0.07
    clip = make_clip(tmp_path / "five.mp4", width=32, height=24, frames=5, rate=25).path
    taken, _, _ = _capture(str(clip), 0.8)
    assert len(taken) > 5 and taken[-1] > 5 / 25  # played past its end: looped
    assert all(b > a for a, b in itertools.pairwise(taken))  # time goes on across the loop


def test_camera_errors_are_one_clear_line():
    assert "no such video device" in str(open_or_error("/dev/video97"))
    assert "busy: another program" in str(device_error("/dev/video0", OSError(errno.EBUSY, "Device busy")))
    assert "'video' group" in str(device_error("/dev/video0", OSError(errno.EACCES, "Permission denied")))
    assert "not a video capture device" in str(device_error("/dev/null", OSError(errno.ENOTTY, "ioctl")))
    assert parse_source("lavfi:testsrc2").kind == "lavfi"
    assert parse_source("rtsp://cam/stream").kind == "url"
    assert parse_source("/dev/video0").kind == "v4l2"
    assert parse_source("clip.mp4").kind == "file"


def open_or_error(src: str) -> Exception:
    with pytest.raises(Exception) as e:
        open_source(parse_source(src), None, None, print)
    return e.value


# -- errors from the command line ------------------------------------------------------------------


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gtasr-stream: error: "), stderr
    return lines[0]


def test_port_in_use_is_one_line(tiny_weights):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "gtasr_stream",
                "preview",
                LAVFI,
                "--weights",
                str(tiny_weights),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    assert r.returncode == 1
    assert f"--port {port}: 127.0.0.1:{port} is already in use" in _one_error_line(r.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/dev/video97"], "source '/dev/video97': no such video device"),
        (["no-such-file.mp4"], "input 'no-such-file.mp4' does not exist"),
        (["lavfi:nosuchfilter=1"], "is not a working lavfi graph"),
        ([LAVFI, "--size", "4096x4096"], "its 4x output 16384x16384 is larger than 8192x8192"),
        ([LAVFI, "--host", "192.0.2.1"], "--host 192.0.2.1: not an address of this machine"),
    ],
)
def test_bad_sources_sizes_and_hosts_are_one_line(tiny_weights, args, message):
    r = CliRunner().invoke(main, ["preview", *args, "--port", "0", "--weights", str(tiny_weights)])
    assert r.exit_code == 1, r.output
    assert message in _one_error_line(r.stderr)


def test_malformed_size_is_a_usage_error(tmp_path, tiny_weights):
    r = CliRunner().invoke(main, ["preview", LAVFI, "--size", "64by48"])
    assert r.exit_code == 2 and "--size" in r.stderr and "WIDTHxHEIGHT" in r.stderr
    (tmp_path / "taken.mkv").write_bytes(b"x")
    r = CliRunner().invoke(main, ["preview", LAVFI, "--record", str(tmp_path / "taken.mkv"), "--port", "0"])
    assert r.exit_code == 1 and "exists; pass -y/--overwrite" in _one_error_line(r.stderr)


# -- a running preview -----------------------------------------------------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    first_line: str


def _start(*args: str | Path) -> Running:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gtasr_stream", "preview", *map(str, args), "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        preexec_fn=sigint_as_in_a_shell,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout=90)
    line = proc.stdout.readline().decode() if ready else ""
    m = re.search(r"(http://\S+/)", line)
    if m is None:
        proc.kill()
        pytest.fail(f"no URL printed: {line!r} {proc.communicate()[1].decode()}")
    return Running(proc, m.group(1), line)


def _get(url: str, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _stats(p: Running) -> dict:
    return json.loads(_get(p.url + "stats")[2])


def _wait_for(p: Running, pred, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = _stats(p)
        if pred(s):
            return s
        time.sleep(0.2)
    pytest.fail(f"timed out; last /stats: {s}")


def _stop(p: Running) -> tuple[int, str]:
    if p.proc.poll() is None:
        p.proc.send_signal(signal.SIGINT)
    try:
        _, err = p.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.proc.kill()
        _, err = p.proc.communicate()
    return p.proc.returncode, err.decode()


@pytest.fixture(scope="module")
def live(tiny_weights) -> Iterator[Running]:
    p = _start(LAVFI, "--weights", tiny_weights)
    _wait_for(p, lambda s: s["frames"]["upscaled"] >= 2)
    yield p
    code, err = _stop(p)
    assert code == 130 and "Traceback" not in err, err  # viewers that vanished left no trace


def _jpeg(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def _frame_pair(p: Running, after: int) -> tuple[int, dict[str, str], dict[str, np.ndarray]]:
    status, headers, body = _get(f"{p.url}frame?after={after}")
    assert status == 200 and headers["Content-Type"].startswith("multipart/form-data"), (status, headers)
    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body
    )
    views = {
        part.get_param("name", header="content-disposition"): _jpeg(part.get_content())
        for part in msg.iter_parts()
    }
    return int(headers["X-Seq"]), headers, views


def test_page_and_stats(live):
    status, headers, page = _get(live.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="output"' in page and b'id="input"' in page and b"/frame?" in page and b"/stats" in page
    s = _stats(live)
    assert s["input_size"] == [64, 48] and s["output_size"] == [256, 192] and s["device"] == "cpu"
    assert s["state"] == "running" and 20 <= s["fps"]["capture"] <= 40, s
    f = s["frames"]
    # no queue anywhere: every captured frame was upscaled, dropped, or is one of at most two in flight
    assert 0 <= f["captured"] - f["upscaled"] - f["dropped"] <= 2, f
    dtype = str(resolve_dtype("auto", torch.device("cpu"))).removeprefix("torch.")  # bf16 where native
    assert f"64x48 -> 256x192 on cpu {dtype}" in live.first_line  # the printed line says what runs
    assert _get(live.url + "nothing-here")[0] == 404


def test_frame_endpoint_pairs_views_waits_for_new_frames_and_latency_stays_bounded(live):
    seq, headers, views = _frame_pair(live, 0)
    assert set(views) == {"output", "input"}
    assert views["output"].shape == views["input"].shape == (192, 256, 3)
    # GTASR, not a copy of the bicubic pane (the random tiny model stays close to bicubic, but not equal)
    assert np.abs(views["output"] - views["input"]).mean() > 0.3
    ages = [float(headers["X-Age-Ms"])]
    for _ in range(6):
        newer, headers, _ = _frame_pair(live, seq)
        assert newer > seq  # `after` waits for a newer frame
        ages.append(float(headers["X-Age-Ms"]))
        seq = newer
    time.sleep(1.0)
    seq, _, later = _frame_pair(live, seq)
    assert np.abs(later["output"] - views["output"]).mean() > 0.5  # the picture moves
    # seconds into a run whose model is mostly slower than the 30 fps source: a queue would show here
    assert max(ages) < 1500, ages
    status, headers, _ = _get(f"{live.url}frame?after={seq + 10_000}", timeout=10)
    assert status == 204 and int(headers["X-Seq"]) > seq  # nothing that new: "ask again"
    for view in ("output", "input"):
        status, headers, data = _get(f"{live.url}{view}.jpg")
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert _jpeg(data).shape == (192, 256, 3)


def _read_mjpeg_frame(fp: io.BufferedReader) -> bytes:
    boundary = fp.readline()
    assert boundary.startswith(b"--"), boundary
    length = None
    while (line := fp.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    assert length is not None
    data = fp.read(length)
    assert fp.read(2) == b"\r\n"
    return data


def test_several_mjpeg_viewers_and_abrupt_disconnects_cost_nothing(live):
    host, port = live.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    viewers = []
    for path in ("/output.mjpg", "/output.mjpg", "/input.mjpg"):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        fp = sock.makefile("rb")
        head = [fp.readline()]
        while head[-1] not in (b"\r\n", b""):
            head.append(fp.readline())
        assert head[0].startswith(b"HTTP/1.1 200") and b"multipart/x-mixed-replace" in b"".join(head), head
        viewers.append((sock, fp))
    for _, fp in viewers:
        a, b = _read_mjpeg_frame(fp), _read_mjpeg_frame(fp)
        assert _jpeg(a).shape == _jpeg(b).shape == (192, 256, 3)
    assert _stats(live)["viewers"] >= 3
    before = _stats(live)["frames"]["upscaled"]
    for sock, fp in viewers:  # vanish without a goodbye: a TCP reset in the middle of a stream
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        fp.close()
        sock.close()
    _wait_for(live, lambda s: s["frames"]["upscaled"] >= before + 3, timeout=30)
    _, _, views = _frame_pair(live, 0)  # and the others are still served
    assert views["output"].shape == (192, 256, 3)


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(
            "headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,700"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(driver))


def test_browser_shows_the_live_upscale_and_stats(live):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(live.url)
        wait = WebDriverWait(browser, 30, poll_frequency=0.1)
        wait.until(lambda b: b.execute_script("return document.getElementById('output').width") == 256)
        wait.until(lambda b: "fps" in b.find_element(By.ID, "stats").text)
        canvas = browser.find_element(By.ID, "output")
        shots, texts = [], []
        for _ in range(2):
            shots.append(
                np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"), np.float32)
            )
            texts.append(browser.find_element(By.ID, "stats").text)
            time.sleep(1.5)
        assert shots[0].std() > 10  # a picture, not an empty canvas
        assert np.abs(shots[0] - shots[1]).mean() > 1  # and it is live
        assert texts[0] != texts[1] and texts[1].startswith("running")
        assert re.search(r"GTASR \d+\.\d fps .* latency \d+ ms capture.screen", texts[1]), texts[1]
        # the page reports what it measured: /stats now has a capture-to-screen latency
        lat = _wait_for(live, lambda s: s["latency_ms"]["capture_to_screen"] is not None)["latency_ms"]
        assert (
            0 < lat["capture_to_screen"] < 5000
            and lat["capture_to_screen"] >= lat["capture_to_upscaled"] * 0.5
        )
        # split mode: the GTASR pane lies over the input, clipped at the slider
        browser.find_element(By.CSS_SELECTOR, "input[value=split]").click()
        clip = browser.execute_script("return getComputedStyle(document.getElementById('out-fig')).clipPath")
        assert "inset" in clip, clip
        rects = browser.execute_script(
            "return ['in-fig','out-fig'].map(id => document.getElementById(id).getBoundingClientRect().left)"
        )
        assert rects[0] == rects[1]
    finally:
        browser.quit()


# -- a file source, --record and Ctrl-C ------------------------------------------------------------


def test_ctrl_c_stops_cleanly_and_keeps_the_recording(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "five.mp4", width=32, height=24, frames=5, rate=25).path
    out = tmp_path / "rec.mkv"
    p = _start(clip, "--weights", tiny_weights, "--record", out)
    _wait_for(p, lambda s: s["frames"]["upscaled"] >= 8)  # more than the clip has: it loops
    code, err = _stop(p)
    assert code == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gtasr-stream: preview stopped:"), err
    n = int(re.search(r"recorded (\d+) to", lines[0]).group(1))
    assert n >= 8
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == n and (frames[0].width, frames[0].height) == (128, 96)
    times = [f.time for f in frames]
    assert times[0] == 0 and all(b > a for a, b in itertools.pairwise(times))
    assert not [f for f in os.listdir(tmp_path) if "partial" in f]  # no temporary file left beside it
