"""The ingress's door: its key ring, read again from the keys directory, its quotas and their metrics.

The decisions are `baton_serving.auth`'s; this is the shell around them that reads the directory and
the clock and counts outcomes per key id in Prometheus (never the key).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from baton_serving import metrics
from baton_serving.auth import ADMITTED, ANONYMOUS, FORBIDDEN, AuthError, Caller, KeyRing, Quotas, load_keys
from baton_serving.config import AuthConfig


class Gate:
    """The ingress's door: its key ring (read again every `reload_interval_s`), quotas and metrics."""

    def __init__(
        self,
        pool: str,
        config: AuthConfig,
        replicas: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._config = config
        self._clock = clock
        self._ring = KeyRing()
        self._loaded_at: float | None = None
        self._quotas = Quotas(replicas)

    def _current_ring(self, now: float) -> KeyRing:
        if self._loaded_at is None or now - self._loaded_at >= self._config.reload_interval_s:
            self._ring = load_keys(Path(self._config.keys_dir))
            self._loaded_at = now
            self._quotas.forget_except(set(self._ring.ids))
        return self._ring

    def identify(self, authorization: str | None) -> Caller:
        """The caller of a request that takes no quota (a model listing), or a 401 `AuthError`."""
        if not self._config.enabled:
            return ANONYMOUS
        try:
            return self._current_ring(self._clock()).identify(authorization)
        except AuthError as refusal:
            metrics.AUTH_FAILURES.labels(self._pool, refusal.code).inc()
            raise

    def enter(self, authorization: str | None) -> Caller:
        """Admit one inference request (401 or 429 `AuthError` if not); `leave` must follow."""
        caller = self.identify(authorization)
        if caller is ANONYMOUS:
            return caller
        try:
            self._quotas.admit(caller, self._clock())
        except AuthError as refusal:
            metrics.KEY_REQUESTS.labels(self._pool, caller.id, refusal.code).inc()
            raise
        metrics.KEY_REQUESTS.labels(self._pool, caller.id, ADMITTED).inc()
        metrics.KEY_IN_FLIGHT.labels(self._pool, caller.id).inc()
        return caller

    def leave(self, caller: Caller) -> None:
        if caller is ANONYMOUS:
            return
        self._quotas.release(caller)
        metrics.KEY_IN_FLIGHT.labels(self._pool, caller.id).dec()

    def check_scope(self, caller: Caller, deployment: str) -> None:
        if not caller.may_call(deployment):
            metrics.KEY_REQUESTS.labels(self._pool, caller.id, FORBIDDEN).inc()
            raise AuthError(403, FORBIDDEN, f"key {caller.id!r} may not call model {deployment!r}")
