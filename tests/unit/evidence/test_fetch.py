"""`bounded_get` stops at its limit: an endless answer ends in TooLarge, not in a full memory."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from baton.evidence.fetch import TooLarge, bounded_get

pytestmark = pytest.mark.unit


class Endless(http.server.BaseHTTPRequestHandler):
    """Answers /endless with chunks forever (until the client hangs up), /small with 10 bytes."""

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/small":
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"0123456789")
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"x" * 65536
        try:
            while True:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_an_endless_answer_is_abandoned_at_the_limit(server: str) -> None:
    with pytest.raises(TooLarge, match=r"larger than 1048576 bytes"):
        bounded_get(server + "/endless", 1 << 20, timeout=10.0)


def test_an_answer_within_the_limit_is_returned_whole(server: str) -> None:
    assert bounded_get(server + "/small", 10, timeout=10.0) == b"0123456789"
