"""The operator's `/livez` and `/readyz` for real: HTTP on loopback, a real event loop, a real operator.

A loop stalled by a blocking call (what a sync API call or a long parse on the loop does) must turn
the probes to 503 with the reason within the threshold, while `/metrics` on the same port keeps
answering (which is why probing `/metrics` proved nothing); a stuck reconcile turns the operator
unready but leaves it live; a replica waiting for the Lease is live and ready (standby).

The running `baton operator` process is stalled from outside, with no hook of its own
(`stall_main_thread`: gdb makes the thread `asyncio.run` drives call `time.sleep`). SIGSTOP would
not do: it stops the probe thread too, so a probe of `/metrics` would fail as well and the test
could not tell the two apart.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from baton.k8s.health import BEAT_S, Health, Thresholds, serve
from baton.k8s.queue import WorkQueue
from tests.integration.operator.fixtures import Cluster, wait_for
from tests.testbed.processes import free_ports, stall_main_thread

pytestmark = pytest.mark.integration

LOOP_S = 2.0


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class RunningLoop:
    """A real asyncio loop in a thread, running `Health.beating` around a main that waits to be stopped."""

    def __init__(self, health: Health, queue: WorkQueue) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, args=(health, queue), daemon=True)
        self.thread.start()

    def _run(self, health: Health, queue: WorkQueue) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(health.beating(self.stop.wait(), queue.processing.values))
        left = asyncio.all_tasks(self.loop)  # a test's worker, still waiting for its next key
        for task in left:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        self.loop.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)


@pytest.fixture
def leader() -> Iterator[tuple[int, Health, RunningLoop, WorkQueue]]:
    health = Health(Thresholds(loop_s=LOOP_S, work_s=1.0))
    server = serve(health, 0)
    health.leading()
    queue = WorkQueue()
    running = RunningLoop(health, queue)
    yield server.server_address[1], health, running, queue
    running.close()
    server.shutdown()


def test_a_blocked_loop_answers_503_within_the_threshold_while_metrics_still_answer(leader) -> None:
    port, _, running, _ = leader
    assert probe(port, "/readyz")[0] == 200 and probe(port, "/livez")[0] == 200
    blocked_at = time.monotonic()
    running.loop.call_soon_threadsafe(time.sleep, 3 * LOOP_S)  # a blocking call on the loop
    wait_for("/readyz to fail", lambda: probe(port, "/readyz")[0] == 503, 3 * LOOP_S)
    noticed = time.monotonic() - blocked_at
    # The last beat came at most one beat before the block; the probe fails once it is LOOP_S old.
    assert LOOP_S - 0.1 <= noticed <= LOOP_S + BEAT_S + 0.5, noticed
    status, reason = probe(port, "/livez")
    assert status == 503 and reason.startswith("the control loop has not run for "), reason
    metrics, exposition = probe(port, "/metrics")
    assert metrics == 200 and "# TYPE" in exposition  # the old probe path would have said healthy
    wait_for("/readyz to recover once the loop runs", lambda: probe(port, "/readyz")[0] == 200, 4 * LOOP_S)


def test_a_stuck_reconcile_turns_only_readiness_503(leader) -> None:
    port, _, running, queue = leader
    never = asyncio.Event()

    async def start_worker() -> None:
        queue.enqueue(("deployment", "ns", "stuck"))
        asyncio.get_running_loop().create_task(queue.work(lambda _key: never.wait()))

    asyncio.run_coroutine_threadsafe(start_worker(), running.loop).result(timeout=5)
    wait_for("/readyz to fail on the stuck reconcile", lambda: probe(port, "/readyz")[0] == 503, 5)
    status, reason = probe(port, "/readyz")
    assert status == 503 and reason.startswith("a reconcile has run for "), reason
    assert probe(port, "/livez")[0] == 200


def test_a_replica_waiting_for_the_lease_is_live_and_ready_then_leads(
    cluster: Cluster, namespace: str, start_operator
) -> None:
    """The real `baton operator` process: standby while another identity holds a fresh Lease."""
    (port,) = free_ports(1)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "baton-operator", "namespace": namespace},
        "spec": {
            "holderIdentity": "another-replica",
            "leaseDurationSeconds": 15,
            "renewTime": now,
            "acquireTime": now,
        },
    }
    cluster.apply_text(namespace, json.dumps(lease))
    operator = start_operator("http://127.0.0.1:9", "--metrics-port", str(port), "--identity", "this-replica")

    def answered(path: str):
        try:
            return probe(port, path)
        except OSError:
            return None

    for path in ("/readyz", "/livez"):
        status, reason = wait_for(
            f"{path} of the standby", lambda p=path: answered(p), 60, diagnose=operator.tail
        )
        assert status == 200 and reason.startswith("standby"), (status, reason)

    # Nobody renews the other identity's Lease: it expires and this replica leads.
    def leading() -> bool:
        got = answered("/readyz")
        return got is not None and got[0] == 200 and got[1].startswith("leading")

    wait_for("the replica to lead and say so", leading, 60, diagnose=operator.tail)
    assert answered("/livez")[0] == 200


def test_a_real_operator_whose_loop_stalls_answers_503_as_shipped(
    cluster: Cluster, namespace: str, start_operator
) -> None:
    """`baton operator` with the default thresholds: the loop stalled for 15 s, over the 10 s allowed."""
    limit = Thresholds().loop_s
    (port,) = free_ports(1)
    operator = start_operator("http://127.0.0.1:9", "--metrics-port", str(port))

    def answered(path: str) -> tuple[int, str] | None:
        try:
            return probe(port, path)
        except OSError:
            return None

    def leading() -> bool:
        got = answered("/readyz")
        return got is not None and got[0] == 200 and got[1].startswith("leading")

    wait_for("the operator to lead", leading, 60, diagnose=operator.tail)
    # gdb's attach takes up to ~10 s on a loaded 2-core machine, so the stall outlasts it generously.
    stall_s = limit + 15
    stalled_at = time.monotonic()
    stall = stall_main_thread(operator.popen.pid, stall_s)
    try:
        wait_for(
            "/readyz to fail",
            lambda: (answered("/readyz") or (0,))[0] == 503,
            stall_s,
            diagnose=operator.tail,
        )
        noticed = time.monotonic() - stalled_at
        status, reason = probe(port, "/livez")
        assert status == 503 and reason.startswith("the control loop has not run for "), reason
        assert probe(port, "/metrics")[0] == 200  # the thread the old probes asked is fine
    finally:
        out, _ = stall.communicate(timeout=stall_s + 60)
    print(f"stalled loop: /readyz 503 after {noticed:.1f} s (threshold {limit:.0f} s)")
    # gdb attaches first (~1 s quiet, up to ~10 s loaded); the last beat was at most a beat before.
    assert limit - BEAT_S <= noticed <= limit + BEAT_S + 10, (noticed, out)
    wait_for("/readyz to recover", leading, 10, diagnose=lambda: out + operator.tail())
    assert operator.popen.poll() is None, "the operator survived the stall"
