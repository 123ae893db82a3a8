"""Leader election on a coordination.k8s.io Lease: only one operator replica acts at a time.

Several replicas may run (HA); each blocks in `acquire` until it holds the Lease, then renews it
in a background thread. A leader that cannot renew before the lease expires exits the process
at once: another replica takes over, and because the rollout core resumes from status alone an
abrupt exit is as safe as a crash (which is what the crash tests exercise).
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

from baton.k8s.kube import FIELD_MANAGER, Kube

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
        identity: str | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.lease_seconds = lease_seconds
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._renewer: threading.Thread | None = None

    def acquire(self, poll_seconds: float = 2.0) -> None:
        while not self._try_acquire():
            time.sleep(poll_seconds)
        log.info("leader election: %s holds lease %s/%s", self.identity, self.namespace, self.name)
        self._renewer = threading.Thread(target=self._renew_forever, name="lease-renewer", daemon=True)
        self._renewer.start()

    def _try_acquire(self) -> bool:
        api = self.kube.coordination
        now = datetime.now(UTC)
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(now, transitions=0, acquired=now),
            )
            try:
                api.create_namespaced_lease(self.namespace, body, field_manager=FIELD_MANAGER)
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
            api.replace_namespaced_lease(self.name, self.namespace, lease, field_manager=FIELD_MANAGER)
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
        deadline = time.monotonic() + self.lease_seconds
        while True:
            time.sleep(self.lease_seconds / 3)
            try:
                if self._try_acquire():
                    deadline = time.monotonic() + self.lease_seconds
                    continue
                log.error("leader election: lease %s/%s taken by another replica", self.namespace, self.name)
                os._exit(LOST_LEADERSHIP_EXIT_CODE)
            except Exception:
                log.exception("leader election: renewing the lease failed")
            if time.monotonic() >= deadline:
                log.error("leader election: lease expired unrenewed; exiting so another replica takes over")
                os._exit(LOST_LEADERSHIP_EXIT_CODE)
