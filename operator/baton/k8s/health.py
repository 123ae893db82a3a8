"""`/livez` and `/readyz` of `baton operator`: a heartbeat the control loop stamps, judged off the loop.

The metrics server runs in a thread of its own, so it answers while the asyncio loop (kopf's
watches, the controller's workers) is stuck behind a blocking call: a probe of `/metrics` calls
such an operator healthy. kopf's own liveness endpoint (`--liveness`) is served by the loop itself,
so a stuck loop makes it time out, never say why. Here, as kube-controller-manager and
controller-runtime serve `/healthz` and `/readyz` beside their controllers, the loop stamps a
monotonic time every `BEAT_S` (`Health.beating`), together with how long the oldest work key has
been reconciled; the metrics thread judges the stamp (`assess`, pure) and answers 503 with the
reason once it is older than `Thresholds.loop_s`, or once one reconcile has run longer than
`Thresholds.work_s` (a worker stuck in an await while the loop still turns).

`/livez` fails on a stuck loop only: a restart cures a blocked loop, while one stuck reconcile of
several workers is a partial failure a restart may not cure (kopf's probing docs make the same
point), so it turns the pod unready (visible, alertable) without restarting it in a loop.

A standby replica, blocked in leader election before its loop exists, is live and ready, as in
client-go's leader-election healthz adaptor (healthy unless leading with an overdue renewal) and
controller-runtime's manager (probes served before election): it is healthy, only not leading.
Unready standbys would stall a rolling update of a two-replica Deployment (the new pod never
becomes Ready while the old one leads) and count as disrupted against a PodDisruptionBudget; the
reason (`standby`) says which replica leads. A leader that cannot renew its Lease exits
(`baton.k8s.leader`), so an overdue renewal needs no probe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

T = TypeVar("T")
BEAT_S = 1.0  # how often the loop stamps; the thresholds are several beats long
LIVEZ, READYZ = "/livez", "/readyz"


class Role(StrEnum):
    STANDBY = "standby"  # waiting for the leader-election Lease; no loop runs yet
    LEADING = "leading"  # holds the Lease (or elects no leader); the control loop runs


@dataclass(frozen=True)
class Thresholds:
    """How old a heartbeat, and how long one reconcile, may get before the probes fail."""

    loop_s: float = 10.0
    work_s: float = 300.0


@dataclass(frozen=True)
class Pulse:
    """What the loop last reported: one immutable value, so the server thread reads it whole."""

    role: Role
    stamp: float  # monotonic time of the last beat (of becoming leader, before the first beat)
    oldest_work_started: float | None = None  # monotonic start of the longest-running reconcile


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def assess(pulse: Pulse, now: float, thresholds: Thresholds, *, readiness: bool) -> Verdict:
    """Whether the operator is live (`readiness=False`) or ready, at monotonic time `now`."""
    if pulse.role == Role.STANDBY:
        return Verdict(True, "standby: waiting for the leader-election Lease")
    silent = now - pulse.stamp
    if silent > thresholds.loop_s:
        return Verdict(
            False, f"the control loop has not run for {silent:.1f} s (threshold {thresholds.loop_s:.0f} s)"
        )
    if readiness and pulse.oldest_work_started is not None:
        running = now - pulse.oldest_work_started
        if running > thresholds.work_s:
            return Verdict(
                False,
                f"a reconcile has run for {running:.0f} s (threshold {thresholds.work_s:.0f} s)",
            )
    return Verdict(True, f"leading: the control loop ran {silent:.1f} s ago")


class Health:
    """The operator's role and the loop's last pulse; written by the loop, read by the server thread."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()
        self.pulse = Pulse(Role.STANDBY, time.monotonic())

    def leading(self) -> None:
        """This process leads from now on: its loop must beat within `loop_s`."""
        self.pulse = Pulse(Role.LEADING, time.monotonic())

    async def beating(self, main: Awaitable[T], in_flight: Callable[[], Iterable[float]]) -> T:
        """Run `main` on this loop, stamping a pulse every `BEAT_S` until it returns.

        `in_flight` gives the monotonic start times of the reconciles running now; it is called on
        the loop, so it may read the work queue without a lock.
        """

        async def beat() -> None:
            while True:
                self.pulse = Pulse(Role.LEADING, time.monotonic(), min(in_flight(), default=None))
                await asyncio.sleep(BEAT_S)

        beater = asyncio.create_task(beat(), name="health-beat")
        try:
            return await main
        finally:
            beater.cancel()

    def check(self, path: str) -> Verdict:
        return assess(self.pulse, time.monotonic(), self.thresholds, readiness=path == READYZ)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a probe caught mid-request never holds the process open


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes arrive every few seconds; one log line each would drown the operator's log."""


def serve(
    health: Health, port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> WSGIServer:
    """Serve `/livez`, `/readyz` and, on every other path, Prometheus metrics, from a daemon thread.

    `shutdown()` the result to stop; `server_address` has the port bound (0 picks a free one).
    """
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in (LIVEZ, READYZ):
            return metrics(environ, start_response)
        verdict = health.check(path)
        body = f"{verdict.reason}\n".encode()
        start_response(
            "200 OK" if verdict.ok else "503 Service Unavailable",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-health", daemon=True).start()
    return server
