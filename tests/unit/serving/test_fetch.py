"""The fetch policy: what a user-named URL or path may reach, how much is read, and what is said.

The servers are real HTTP servers on 127.0.0.1; a test reaches them only through a policy that
lists loopback explicitly (`LOOPBACK`), which is what the policy is for.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from baton_serving.config import FetchPolicy
from baton_serving.fetch import FetchError, TooLarge, bounded_get, fetch, read, shown

pytestmark = pytest.mark.unit

LOOPBACK = FetchPolicy(schemes=["http"], allowed_networks=["127.0.0.0/8"])
SECRET = "the-token-nobody-may-see"


class Answers(http.server.BaseHTTPRequestHandler):
    """/small: 10 bytes; /endless: chunks forever; /drip: a byte a second; /hop/N: redirects N + 1 times;
    /metadata: a redirect to the cloud's metadata endpoint; /secret: a body nobody may see."""

    def do_GET(self) -> None:
        self.path = self.path.split("?", 1)[0]
        if self.path.startswith("/hop/"):
            left = int(self.path.rsplit("/", 1)[1])
            self._redirect(f"/hop/{left - 1}" if left else "/small")
        elif self.path == "/metadata":
            self._redirect("http://169.254.169.254/latest/meta-data/")
        elif self.path == "/small":
            self._body(b"0123456789")
        elif self.path == "/secret":
            self.send_response(404)
            self.send_header("Content-Length", str(len(SECRET)))
            self.end_headers()
            self.wfile.write(SECRET.encode())
        elif self.path == "/host":
            self._body(self.headers["Host"].encode())
        else:
            self._chunks(
                b"x" * 65536 if self.path == "/endless" else b"x", 0 if self.path == "/endless" else 1
            )

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunks(self, chunk: bytes, pause: float) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_an_answer_within_the_limit_is_returned_whole(server: str) -> None:
    assert fetch(server + "/small", LOOPBACK, 10, 10.0) == b"0123456789"
    # The connection goes to the checked address; the request still names the host the URL names.
    port = server.rsplit(":", 1)[1]
    assert fetch(f"http://localhost:{port}/host", LOOPBACK, 100, 10.0) == f"localhost:{port}".encode()


def test_an_endless_answer_is_abandoned_at_the_limit(server: str) -> None:
    with pytest.raises(TooLarge, match=r"larger than 1048576 bytes"):
        fetch(server + "/endless", LOOPBACK, 1 << 20, 10.0)
    with httpx.Client() as client, pytest.raises(TooLarge, match=r"larger than 1048576 bytes"):
        bounded_get(server + "/endless", 1 << 20, timeout=10.0, client=client)


def test_a_slow_drip_ends_at_the_whole_download_deadline(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="not read whole before its deadline"):
        fetch(server + "/drip", LOOPBACK, 1 << 20, 2.0)
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",  # the cloud metadata endpoint
        "https://127.0.0.1/",
        "https://localhost/",
        "https://2130706433/",  # 127.0.0.1 as one number
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",  # IPv4 in IPv6
        "https://10.1.2.3/",
        "https://192.168.0.1/",
        "https://100.64.0.1/",  # shared address space
        "https://[fd00::1]/",
    ],
)
def test_by_default_no_loopback_link_local_private_or_metadata_address_is_reached(url: str) -> None:
    with pytest.raises(FetchError, match="not a public address nor in the allowed networks"):
        fetch(url, FetchPolicy(), 1024, 5.0)


def test_the_scheme_and_the_host_must_be_allowed(server: str) -> None:
    with pytest.raises(FetchError, match="scheme 'http' is not allowed"):
        fetch(server + "/small", FetchPolicy(allowed_networks=["127.0.0.0/8"]), 10, 5.0)
    with pytest.raises(FetchError, match=r"host 127.0.0.1 is not in the allowed hosts"):
        fetch(server + "/small", LOOPBACK.model_copy(update={"hosts": ["*.example.com"]}), 10, 5.0)
    for scheme in ("file:///etc/passwd", "ftp://example.com/x", "gopher://example.com/"):
        with pytest.raises(FetchError):
            fetch(scheme, LOOPBACK, 10, 5.0)


def test_redirects_are_limited_and_each_hop_is_checked(server: str) -> None:
    assert fetch(server + "/hop/2", LOOPBACK, 10, 10.0) == b"0123456789"
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch(server + "/hop/3", LOOPBACK, 10, 10.0)
    with pytest.raises(FetchError, match=r"169.254.169.254.*not a public address"):
        fetch(server + "/metadata", LOOPBACK, 10, 10.0)


def test_a_message_names_the_url_without_secrets_and_never_what_was_read(server: str) -> None:
    url = server.replace("http://", f"http://user:{SECRET}@") + f"/secret?token={SECRET}#{SECRET}"
    with pytest.raises(FetchError) as error:
        fetch(url, LOOPBACK, 1024, 10.0)
    assert str(error.value) == f"{server}/secret: HTTP 404"
    assert SECRET not in shown(url)


def test_local_reads_stay_under_a_root(tmp_path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "items.jsonl").write_text("{}\n")
    (tmp_path / "token").write_text(SECRET)
    (root / "link").symlink_to(tmp_path / "token")
    policy = FetchPolicy(local_roots=[str(root)])
    assert read(str(root / "items.jsonl"), policy, 100, 5.0) == b"{}\n"
    assert read((root / "items.jsonl").as_uri(), policy, 100, 5.0) == b"{}\n"
    for location, reason in [
        (str(tmp_path / "token"), "not under an allowed local root"),
        (str(root / "link"), "not under an allowed local root"),  # a link out of the root
        (f"{root}/../token", r"`\.\.` is not allowed"),
        ("/var/run/secrets/kubernetes.io/serviceaccount/token", "not under an allowed local root"),
        (f"file://elsewhere{tmp_path}/token", "a file URI names no host"),
    ]:
        with pytest.raises(FetchError, match=reason) as error:
            read(location, policy, 100, 5.0)
        assert SECRET not in str(error.value)
    with pytest.raises(TooLarge):
        read(str(root / "items.jsonl"), policy, 2, 5.0)


def test_the_policy_refuses_unknown_fields_and_bad_networks() -> None:
    with pytest.raises(ValueError, match=r"allowedNetworks|allowed_networks"):
        FetchPolicy.model_validate({"allowedNetworks": ["not-a-network"]})
    with pytest.raises(ValueError, match="extra"):
        FetchPolicy.model_validate({"allowLoopback": True})
