"""Scale to zero: an engine replica that has answered nothing for a while unloads its model, and the
next request waits for the load instead of failing.

Many narrow domain models share a pool, and most of them are idle most of the time; an idle one
should not hold its memory. Two ways were open, and the replica's own is the one taken:

- **The replica stops its llama-server and starts it again on the next request** (this module).
  The Ray replica stays; the model's memory (the mapped weights, the KV cache of every slot,
  llama.cpp's compute buffers) goes with the process: 263 MB for an 86 M-parameter Q4_K_M model
  with 8 slots of 512 tokens. The next request's first token came 0.52 s after it arrived, 1.08x
  the time llama-server started by hand on the same file takes to its first token
  (bench/cold_start.py, docs/serving.md).
- Ray Serve's own `min_replicas: 0`. A cold start is then a new Ray worker process (Python, Ray,
  baton_serving imported), the artifact fetched and hashed again, and only then llama-server's
  load: a new replica of the same revision took 4.5-5.9 s to load in the same bench, 11-27x the
  cold start above. And the ingress's status probe is itself a request to the replica, so it
  would keep every revision awake; the probe would have to stop asking exactly the revisions it
  needs to know about.

What the replica's way does not free: the Ray replica's own process (~100 MB of Python) and Ray's
`memory` reservation of the replica (`baton_serving.resources`), so a pool packs no more revisions
than it did; the memory is free for the machine (page cache, other processes, another pool), not
for Ray's placement. The file reloaded is the one verified against its digest when the replica
started (llama.cpp memory-maps it, so a running server reads it lazily anyway): a cold start pays
llama.cpp's load, not a second hash of the file.

The control plane decides when a deployment may scale to zero (`spec.engine.scaleToZeroAfter`,
never while a candidate is on trial or a previous champion bakes: latency evidence must not include
a cold start), and says so in the engine's `user_config`, which Serve delivers through
`reconfigure` without restarting the replica. Only requests count as activity: the ingress's
status probes do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from baton_serving.engines import EngineUnavailableError

if TYPE_CHECKING:  # the engine module is imported where the replica builds one
    from baton_serving.engines.llamacpp import LlamaCppEngine

logger = logging.getLogger("baton_serving")

# How often an idle replica looks at its clock, at most; a short `after` is looked at more often.
MAX_CHECK_INTERVAL_S = 1.0
SCALE_EVENTS = ("unload", "load")


def idle_expired(after_s: float | None, in_flight: int, idle_since: float, now: float) -> bool:
    """Whether a replica should unload now: scale to zero is on, no request is in flight, and none
    has been for `after_s` seconds (`idle_since`: when the last request ended, or the model loaded)."""
    return after_s is not None and in_flight == 0 and now - idle_since >= after_s


def check_interval(after_s: float | None) -> float:
    """How long the watcher sleeps between looks: a quarter of `after_s`, at most a second."""
    return MAX_CHECK_INTERVAL_S if after_s is None else min(MAX_CHECK_INTERVAL_S, after_s / 4)


class ScaleToZero:
    """Keeps one engine loaded while requests use it and unloads it once idle for `after_s`.

    Every request goes through `serving()`; one `asyncio.Lock` orders loads and unloads, so a
    request that arrives while the model unloads waits for the unload and then the load. Runs on
    the replica's event loop; llama-server's start and stop run in worker threads.
    """

    def __init__(self, engine: LlamaCppEngine, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self.after_s: float | None = None
        self._in_flight = 0
        self._idle_since = clock()
        self._transition = asyncio.Lock()
        self._watcher: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self.events = dict.fromkeys(SCALE_EVENTS, 0)

    async def configure(self, after_s: float | None) -> None:
        """Scale to zero after `after_s` idle seconds, or (None) never: then an unloaded model loads
        now, in the background, so a canary's champion answers warm."""
        self.after_s = after_s
        if after_s is not None and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())
        if after_s is None and not self._engine.loaded:
            task = asyncio.create_task(self._warm())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def status(self) -> dict[str, Any]:
        """What the ingress exports: loaded or not, the last load's seconds, the events so far, and
        how many requests wait for a load."""
        loaded = self._engine.loaded
        return {
            "loaded": loaded,
            "load_seconds": self._engine.load_seconds,
            "scale_events": dict(self.events),
            "waiting_for_load": 0 if loaded else self._in_flight,
        }

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[float]:
        """Hold the model loaded for one request; yields how long the request waited for a load."""
        self._in_flight += 1
        try:
            yield await self._ensure_loaded()
        finally:
            self._in_flight -= 1
            self._idle_since = self._clock()

    async def _ensure_loaded(self) -> float:
        if self._engine.loaded and not self._transition.locked():
            return 0.0
        began = self._clock()
        async with self._transition:
            if not self._engine.loaded:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self._engine.load)
                except (ValueError, OSError) as error:  # llama-server exited, timed out, or is gone
                    raise EngineUnavailableError(f"the model did not load again: {error}") from error
                self.events["load"] += 1
                self._idle_since = self._clock()
        return self._clock() - began

    async def _warm(self) -> None:
        try:
            await self._ensure_loaded()
        except EngineUnavailableError as error:  # the next request tries again and gets the 503
            logger.error("loading the model for a rollout failed: %s", error)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(check_interval(self.after_s))
            if not self._should_unload():
                continue
            async with self._transition:
                if self._should_unload():  # no request came in while the lock was taken
                    self.events["unload"] += 1  # counted as it begins, when `loaded` turns False
                    await self._engine.unload()

    def _should_unload(self) -> bool:
        return self._engine.loaded and idle_expired(
            self.after_s, self._in_flight, self._idle_since, self._clock()
        )
