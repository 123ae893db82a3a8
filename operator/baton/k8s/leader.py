"""Leader election on a coordination.k8s.io Lease: only one operator replica acts at a time.

Several replicas may run (HA); each blocks in `acquire` until it holds the Lease, then renews it
in a background thread, as client-go's leader election does (lease 15 s, renew deadline 10 s,
retry every 2 s). A leader that has not renewed within the renew deadline exits the process at
once, and so does one that finds the Lease taken: another replica takes over, and because the
rollout core resumes from status alone an abrupt exit is as safe as a crash (which is what the
crash tests exercise).

The renew deadline is what fences writes (`ensure_leading`, which `Kube` calls before each one):
a process frozen past it (a long GC pause, SIGSTOP, a starved node) may have been replaced, so on
waking it writes nothing and exits. A write the check lets through is bounded by
`WRITE_TIMEOUT_S`, and renew deadline + write timeout <= lease duration, so it lands before
another replica can hold the Lease. (A write the API server still applies after the client gave up
is what the resourceVersion preconditions on status writes catch.)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from baton.k8s.kube import FIELD_MANAGER, WRITE_TIMEOUT_S, Kube

log = logging.getLogger("baton.leader")
LOST_LEADERSHIP_EXIT_CODE = 3


class LeaseElector:
    """Holds one Lease; `acquire()` blocks until this process is the leader."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str = "baton-operator",
        *,
        lease_seconds: int = 15,
        renew_deadline_seconds: float = 10.0,
        retry_seconds: float = 2.0,
        identity: str | None = None,
    ) -> None:
        if renew_deadline_seconds + WRITE_TIMEOUT_S > lease_seconds:
            raise ValueError(
                f"renew deadline {renew_deadline_seconds} s + write timeout {WRITE_TIMEOUT_S} s must not "
                f"exceed the lease duration {lease_seconds} s, or two leaders could write at once"
            )
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.lease_seconds = lease_seconds
        self.renew_deadline_seconds = renew_deadline_seconds
        self.retry_seconds = retry_seconds
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._renewed_at = float("-inf")  # monotonic time of the last request that (re)took the Lease
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        while not self._try_acquire():
            time.sleep(self.retry_seconds)
        log.info("leader election: %s holds lease %s/%s", self.identity, self.namespace, self.name)
        self._renewer = threading.Thread(target=self._renew_forever, name="lease-renewer", daemon=True)
        self._renewer.start()

    def ensure_leading(self) -> None:
        """Return only if the Lease was renewed within the renew deadline; otherwise exit the process."""
        since = time.monotonic() - self._renewed_at
        if since > self.renew_deadline_seconds:
            log.error(
                "leader election: lease %s/%s last renewed %.1f s ago (deadline %.0f s); "
                "exiting without writing so another replica leads",
                self.namespace,
                self.name,
                since,
                self.renew_deadline_seconds,
            )
            os._exit(LOST_LEADERSHIP_EXIT_CODE)

    def _try_acquire(self) -> bool:
        api = self.kube.coordination
        # Taken before the request: the Lease counts from a moment no later than its renewTime.
        started = time.monotonic()
        if self._try_take(api):
            self._renewed_at = started
            return True
        return False

    def _try_take(self, api: client.CoordinationV1Api) -> bool:
        now = datetime.now(UTC)
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace, _request_timeout=WRITE_TIMEOUT_S)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(now, transitions=0, acquired=now),
            )
            try:
                api.create_namespaced_lease(
                    self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=WRITE_TIMEOUT_S
                )
            except ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
            return True
        spec = lease.spec
        held_by_other = spec.holder_identity not in (None, "", self.identity)
        if held_by_other and spec.renew_time is not None:
            expires = spec.renew_time + timedelta(seconds=spec.lease_duration_seconds or self.lease_seconds)
            if expires > now:
                return False
        transitions = (spec.lease_transitions or 0) + (1 if held_by_other else 0)
        lease.spec = self._spec(
            now, transitions=transitions, acquired=now if held_by_other else spec.acquire_time
        )
        try:
            # The resourceVersion in `lease` makes this a compare-and-swap: two contenders cannot both win.
            api.replace_namespaced_lease(
                self.name,
                self.namespace,
                lease,
                field_manager=FIELD_MANAGER,
                _request_timeout=WRITE_TIMEOUT_S,
            )
        except ApiException as conflict:
            if conflict.status == 409:
                return False
            raise
        return True

    def _spec(self, now: datetime, *, transitions: int, acquired: datetime | None) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self.lease_seconds,
            acquire_time=acquired or now,
            renew_time=now,
            lease_transitions=transitions,
        )

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.retry_seconds)
            # First, before any request: a process that slept past the deadline must not renew a
            # Lease another replica may hold by now (nor take it back from one that held it since).
            self.ensure_leading()
            try:
                if not self._try_acquire():
                    log.error(
                        "leader election: lease %s/%s taken by another replica", self.namespace, self.name
                    )
                    os._exit(LOST_LEADERSHIP_EXIT_CODE)
            except Exception:
                log.exception("leader election: renewing the lease failed; retrying until the deadline")
