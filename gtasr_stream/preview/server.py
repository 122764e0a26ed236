"""The preview's web server (standard library only): the page, the frames, the stats.

    /               the page (page.py): input and GTASR side by side or split, live stats
    /frame?after=N  the newest frame newer than N, both views in one multipart/form-data body
                    (so the panes always show the same frame), waiting up to FRAME_WAIT_S for it;
                    headers X-Seq, X-Age-Ms (capture to now), X-Held-Ms (request to now);
                    &latency=MS reports the page's capture-to-screen estimate of the frame
                    before, &viewer=ID names the page
    /output.mjpg    MJPEG streams (multipart/x-mixed-replace) of each view, for <img> tags,
    /input.mjpg     players (mpv, ffplay, VLC) and OBS
    /output.jpg     the newest frame of each view, once
    /input.jpg
    /stats          the counters as JSON (stats.py)

One thread per connection; a viewer pulls frames no faster than it shows them (or than TCP lets
us write), so a slow viewer gets fewer frames, never older ones, and costs the others nothing.
A viewer that disconnects ends its thread quietly.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import __version__
from ..errors import UserError
from .jpeg import VIEWS, Shown, View
from .page import PAGE
from .slot import Latest
from .stats import PreviewStats

FRAME_WAIT_S = 2.0  # /frame waits this long for a newer frame before answering 204
MJPEG_BOUNDARY = "gtasrframe"
_GONE = (ConnectionError, TimeoutError)  # the viewer went away (BrokenPipe, ConnectionReset, ...)


@dataclass
class Hub:
    """What the request threads share with the rest of the preview."""

    shown: Latest[Shown]  # the newest upscaled frame
    stats: PreviewStats
    stop: threading.Event


class PreviewServer(ThreadingHTTPServer):
    daemon_threads = True  # a viewer's thread never holds up Ctrl-C
    request_queue_size = 128  # listen backlog: the default 5 refused connections at ~30 viewers

    def __init__(self, address: tuple[str, int], hub: Hub) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.hub = hub
        # Host names this server answers to (plus any IP literal, which DNS rebinding cannot use).
        self.names = {"localhost", address[0].lower().strip("[]"), socket.gethostname().lower()}
        self.names.add(socket.getfqdn().lower())
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _GONE):
            return
        super().handle_error(request, client_address)  # a bug: the traceback helps more than a line


def bind_server(host: str, port: int, hub: Hub) -> PreviewServer:
    """Listen on host:port (port 0: any free one) or raise a UserError naming the flag."""
    try:
        return PreviewServer((host, port), hub)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: not a known host name or address ({e.strerror})") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(
                f"--port {port}: {host}:{port} is already in use; choose another --port (0 picks a free one)"
            ) from None
        if e.errno == errno.EACCES:
            raise UserError(f"--port {port}: permission denied (ports below 1024 need root)") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise UserError(f"--host {host}: not an address of this machine") from None
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None


def url_of(server: PreviewServer) -> str:
    addr, port = server.server_address[:2]
    host = addr.decode() if isinstance(addr, bytes) else str(addr)
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: PreviewServer
    protocol_version = "HTTP/1.1"  # keep-alive: the page's frame requests reuse one connection
    server_version = f"gtasr-stream/{__version__}"
    timeout = 30  # s: a viewer that stops reading this long loses its connection

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the terminal is the user's."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not _is_local_host(self.headers.get("Host", ""), self.server.names):
            # DNS rebinding: a page of another site, its name re-pointed at 127.0.0.1, would read
            # the camera; the browser still sends that site's name as Host
            self._send(
                421, "text/plain; charset=utf-8", b"unknown Host: use the address gtasr-stream printed\n"
            )
            return
        try:
            if url.path == "/":
                self._send(200, "text/html; charset=utf-8", PAGE)
            elif url.path == "/stats":
                self._send(200, "application/json", json.dumps(self.server.hub.stats.snapshot()).encode())
            elif url.path == "/frame":
                self._frame(query)
            elif url.path in ("/output.jpg", "/input.jpg"):
                self._still(_view(url.path))
            elif url.path in ("/output.mjpg", "/input.mjpg"):
                self._mjpeg(_view(url.path))
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try / /stats /frame /output.mjpg\n")
        except _GONE:
            self.close_connection = True

    def _send(self, code: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _not_yet(self) -> None:
        state = json.dumps({"state": self.server.hub.stats.state}).encode()
        self._send(503, "application/json", state, {"Retry-After": "1"})

    def _frame(self, query: dict[str, list[str]]) -> None:
        hub = self.server.hub
        after = _number(query, "after", int) or 0
        reported = _number(query, "latency", float)
        if not self._same_origin():  # another site's page may look, but not write our statistics
            reported = None
            query.pop("viewer", None)
        if reported is not None and 0 < reported < 60_000:
            hub.stats.on_screen_latency(reported / 1000)
        t0 = time.monotonic()
        got = hub.shown.wait_newer(after, FRAME_WAIT_S)
        if got is None:
            self._not_yet()
            return
        seq, item = got
        if seq <= after:  # nothing newer yet: the page asks again
            self.send_response(204)
            self.send_header("X-Seq", str(seq))
            self.end_headers()
            return
        boundary = secrets.token_hex(12)
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{view}"; filename="{view}.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode()
            + item.jpeg(view)
            + b"\r\n"
            for view in VIEWS
        )
        body += f"--{boundary}--\r\n".encode()
        now = time.monotonic()
        headers = {
            "X-Seq": str(seq),
            "X-Age-Ms": f"{(now - item.captured_at) * 1000:.1f}",
            "X-Held-Ms": f"{(now - t0) * 1000:.1f}",  # waiting + encoding: not network time
            "X-Source-Time": f"{item.t:.3f}",
        }
        self._send(200, f"multipart/form-data; boundary={boundary}", body, headers)
        # a page may use several connections: it names itself
        viewer = query.get("viewer", [""])[0][:64] or self.client_address
        hub.stats.on_sent(now, seq, now - item.captured_at, viewer)

    def _same_origin(self) -> bool:
        """No Origin header (players, scripts, same-origin GETs) or our own page's origin."""
        origin = self.headers.get("Origin")
        return origin is None or urlsplit(origin).netloc.lower() == self.headers.get("Host", "").lower()

    def _still(self, view: View) -> None:
        got = self.server.hub.shown.latest()
        if got is None:
            self._not_yet()
            return
        seq, item = got
        self._send(200, "image/jpeg", item.jpeg(view), {"X-Seq": str(seq)})

    def _mjpeg(self, view: View) -> None:
        hub = self.server.hub
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        seq = 0
        while not hub.stop.is_set():
            got = hub.shown.wait_newer(seq, 1.0)
            if got is None or got[0] <= seq:
                continue
            seq, item = got
            data = item.jpeg(view)
            head = f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
            self.wfile.write(head.encode() + data + b"\r\n")
            now = time.monotonic()
            hub.stats.on_sent(now, seq, now - item.captured_at, self.client_address)


def _is_local_host(host_header: str, names: set[str]) -> bool:
    """True for a Host header naming this machine: an IP literal, localhost, its name, --host.
    No Host at all (HTTP/1.0 players) is fine too: every browser sends one."""
    if not host_header:
        return True
    try:
        host = urlsplit(f"//{host_header}").hostname or ""
    except ValueError:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host.lower() in names


def _view(path: str) -> View:
    return "output" if path.startswith("/output") else "input"


def _number(query: dict[str, list[str]], key: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(query[key][0])
    except (KeyError, ValueError):
        return None
