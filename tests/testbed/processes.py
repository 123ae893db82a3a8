"""Starting, probing and stopping the test bed's server processes, shared by every launcher.

Each server gets a log file, a readiness probe with a generous deadline (the machine's two cores are
often busy with builds), and a failure message that carries the tail of its log, because a server that
died on start-up is only diagnosable from what it printed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


class StartupError(RuntimeError):
    """A server did not become ready; the message includes the tail of its log."""


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports that are free right now (held open together so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _die_with_parent() -> None:
    # A test run killed hard must not leave an API server or etcd behind on the shared machine.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    argv: Sequence[str | os.PathLike[str]], log: Path, *, tied_to_parent: bool
) -> subprocess.Popen[bytes]:
    """Starts a server in its own session with stdout and stderr in `log`.

    `tied_to_parent` stops it when the starting process dies (pytest); a detached server (the
    `up` command) outlives the process that started it.
    """
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if tied_to_parent else None,
        )


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {log})"
    return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str, *, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


def wait_ready(
    name: str,
    process: subprocess.Popen[bytes],
    log: Path,
    probe: Callable[[], bool],
    timeout: float,
) -> float:
    """Polls `probe` until it succeeds; returns the seconds it took. Raises StartupError with the log."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise StartupError(
                f"{name} exited with code {process.returncode} before it was ready;"
                f" log {log}:\n{log_tail(log)}"
            )
        if probe():
            return time.monotonic() - started
        time.sleep(0.2)
    raise StartupError(f"{name} was not ready after {timeout:.0f} s; log {log}:\n{log_tail(log)}")


def wait_for(check: Callable[[], T], what: str, diagnose: Callable[[], str], timeout: float) -> T:
    """Polls `check` each second until it returns something truthy, and returns that.

    Raises AssertionError with `what` and `diagnose()` (the state a test reads to see why) after `timeout`.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout:.0f} s\n{diagnose()}")
        time.sleep(1.0)


def terminate(pid: int, *, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, for a process we started (maybe not our child)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child (the `down` command): fall back to asking the kernel.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")
    return not (state.exists() and state.read_text().split(")")[-1].split()[0] == "Z")


def stall_main_thread(pid: int, seconds: float) -> subprocess.Popen[str]:
    """Block a running CPython process's main thread in `time.sleep(seconds)`, from outside (gdb).

    gdb makes that thread call the C API (take the GIL, run one line, release it) while the process's
    other threads run on: what a blocking call on an asyncio loop (`asyncio.run` drives the main
    thread) does to the rest of the process, with no hook in the code under test. SIGSTOP would stop
    every thread. `communicate()` the result: it ends when the sleep does.
    """
    from tests.testbed import binaries

    line = f"import time; time.sleep({seconds})"
    return subprocess.Popen(
        [str(binaries.system("gdb")), "-p", str(pid), "-batch", "-nx", "-ex", "thread 1",
         "-ex", "call (int)PyGILState_Ensure()", "-ex", f'call (int)PyRun_SimpleString("{line}")',
         "-ex", "call (void)PyGILState_Release($1)"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
