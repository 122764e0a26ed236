"""The preview server answers this machine only: DNS rebinding, foreign pages, many viewers."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from gtasr_stream.errors import UserError
from gtasr_stream.preview import server as server_mod
from gtasr_stream.preview.server import Hub, PreviewServer, bind_server
from gtasr_stream.preview.session import Preview, PreviewOptions
from gtasr_stream.preview.slot import Latest
from gtasr_stream.preview.stats import PreviewStats


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[PreviewServer]:
    monkeypatch.setattr(server_mod, "FRAME_WAIT_S", 0.05)  # no frame will come: answer at once
    hub = Hub(Latest(), PreviewStats(Latest(), {}), threading.Event())
    srv = bind_server("127.0.0.1", 0, hub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(srv: PreviewServer, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_only_host_names_of_this_machine_are_answered(served):
    port = served.server_address[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"{socket.gethostname()}:{port}"):
        assert get(served, "/stats", {"Host": host}) == 200, host
    # a rebinding attack: attacker.example re-pointed at 127.0.0.1 after the page loaded
    assert get(served, "/stats", {"Host": f"attacker.example:{port}"}) == 421
    assert get(served, "/output.jpg", {"Host": "attacker.example"}) == 421
    assert get(served, "/stats", {}) == 200  # no Host at all: an HTTP/1.0 player, not a browser


def test_a_foreign_page_cannot_write_the_statistics(served):
    host = f"127.0.0.1:{served.server_address[1]}"

    def screen_latency() -> float | None:
        return served.hub.stats.snapshot()["latency_ms"]["capture_to_screen"]

    get(served, "/frame?after=0&latency=5000", {"Host": host, "Origin": "http://attacker.example"})
    assert screen_latency() is None
    get(served, "/frame?after=0&latency=50", {"Host": host, "Origin": f"http://{host}"})  # our own page
    assert screen_latency() == pytest.approx(50)


def test_many_viewers_connecting_at_once_are_queued_not_refused():
    hub = Hub(Latest(), PreviewStats(Latest(), {}), threading.Event())
    srv = bind_server("127.0.0.1", 0, hub)  # not accepting yet: every connection waits in the backlog
    socks = []
    try:
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=3)
            socks.append(s)
    finally:
        for s in socks:
            s.close()
        srv.server_close()
    assert len(socks) == 60


def test_every_interface_warns_that_the_page_is_open(tmp_path):
    warnings: list[str] = []
    opts = PreviewOptions(source=str(tmp_path / "missing.mp4"), host="0.0.0.0", port=0)
    with pytest.raises(UserError):  # the source is checked after the port
        Preview(opts, lambda: None, warnings.append)  # type: ignore[arg-type, return-value]
    assert len(warnings) == 1 and warnings[0].startswith("--host 0.0.0.0: the page has no authentication")
    warnings.clear()
    with pytest.raises(UserError):
        Preview(PreviewOptions(source=str(tmp_path / "missing.mp4"), port=0), lambda: None, warnings.append)  # type: ignore[arg-type, return-value]
    assert warnings == []
