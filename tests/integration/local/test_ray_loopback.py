"""`baton up`'s Ray listens on loopback only and refuses a client without a token.

Ray's GCS and raylet run whatever code a client sends them; on a laptop on a café's network, a Ray
that listens on the machine's address with no token is a remote shell. The check is what `ss` sees
of every process of the Ray that `LocalServe` starts, in a process of its own with no
`RAY_AUTH_MODE` set (as a user's shell has none).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time

import psutil
import pytest

from tests.testbed.processes import free_ports

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 240

# A child that starts `baton up`'s data plane, says where its GCS is, and waits for stdin to close.
SERVE = """
import sys
import ray
from baton.local.dataplane import LocalKeys, LocalServe

serve = LocalServe(int(sys.argv[1]), LocalKeys.disabled())
serve.start()
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
serve.stop()
"""

# A client of that GCS, with the token (or the lack of one) its environment gives it: the one Ray's
# own drivers use, asking for the GCS's keys (a driver with a wrong token retries for minutes).
INTRUDER = """
import sys
from ray._raylet import GcsClient

try:
    GcsClient(address=sys.argv[1]).internal_kv_keys(b"", namespace=None, timeout=30)
except Exception as error:
    print("refused:", type(error).__name__, flush=True)
else:
    print("joined", flush=True)
"""


def listening(pids: set[int]) -> list[tuple[str, str]]:
    """(local address, process) of every TCP socket one of `pids` listens on."""
    found = []
    for line in subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append((line.split()[3], line.split()[-1]))
    return found


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("*", "0.0.0.0", "::"):
        return False
    ip = ipaddress.ip_address(host)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


def test_baton_ups_ray_listens_on_loopback_only_and_wants_its_token(tmp_path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    (port,) = free_ports(1)
    child = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "serve.err", "w"),  # noqa: SIM115 (closed with the child)
        text=True,
        env={**env, "HOME": str(tmp_path)},  # no token of an earlier Ray in ~/.ray
        cwd=tmp_path,
    )
    try:
        began = time.monotonic()
        gcs = child.stdout.readline().strip()
        assert gcs, f"Ray never started:\n{(tmp_path / 'serve.err').read_text()[-3000:]}"
        assert gcs.startswith("127.0.0.1:"), gcs
        pids = {child.pid, *(process.pid for process in psutil.Process(child.pid).children(recursive=True))}
        sockets = listening(pids)
        assert any(address.endswith(f":{port}") for address, _ in sockets), sockets  # Serve's proxy
        assert len(sockets) >= 5, sockets  # GCS, raylet, agents, Serve: every one of them is looked at
        exposed = [(address, owner) for address, owner in sockets if not is_loopback(address)]
        assert not exposed, exposed
        assert not (tmp_path / ".ray" / "auth_token").exists()  # the run's token is its own, in memory

        for credentials in (
            {"RAY_AUTH_MODE": "disabled"},
            {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
        ):
            intruder = subprocess.run(
                [sys.executable, "-c", INTRUDER, gcs],
                capture_output=True,
                text=True,
                env={**env, **credentials, "HOME": str(tmp_path)},
                timeout=STARTUP_TIMEOUT_S,
            )
            assert "refused: AuthenticationError" in intruder.stdout, (
                intruder.stdout + intruder.stderr[-2000:]
            )
        print(
            f"\nRay up in {time.monotonic() - began:.1f} s; {len(sockets)} listening sockets, all on loopback"
        )
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
