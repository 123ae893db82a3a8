"""The operator's work queue: keys in, a few async workers out, one worker per key at a time.

As in client-go's workqueue: a key queued twice is processed once; a key queued while it is being
processed runs again after (two reconciles of one deployment could write statuses computed from
different views); a delayed request keeps the earliest due time; a failed key is retried after a
pause. kopf serializes handlers per object too, but baton reconciles a deployment for events of
other kinds (candidates, RayServices), and posting through kopf handlers would cost it handler
state annotations on each object (the write budget the scale benchmark measures).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("baton.operator")
Key = tuple[str, str, str]  # (kind, namespace, name)
RETRY_S = 5.0


class WorkQueue:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.queued: set[Key] = set()
        # Each key being reconciled, with the monotonic time it started (the health probe's stall check).
        self.processing: dict[Key, float] = {}
        self.dirty: set[Key] = set()
        self.timers: dict[Key, asyncio.TimerHandle] = {}

    def enqueue(self, key: Key) -> None:
        if key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    def enqueue_later(self, key: Key, delay: float) -> None:
        """Queue `key` after `delay`; of several pending requests for one key, the earliest wins."""
        if key in self.queued:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self.timers.get(key)
        if pending is not None:
            if pending.when() <= due:
                return
            pending.cancel()

        def fire() -> None:
            self.timers.pop(key, None)
            self.enqueue(key)

        self.timers[key] = loop.call_at(due, fire)

    async def work(self, process: Callable[[Key], Awaitable[None]]) -> None:
        """One worker: forever take a key and process it."""
        while True:
            key = await self.queue.get()
            self.queued.discard(key)
            if key in self.processing:
                self.dirty.add(key)
                self.queue.task_done()
                continue
            self.processing[key] = time.monotonic()
            try:
                await process(key)
            except Exception:
                log.exception("reconciling %s/%s/%s failed; retrying in %.0f s", *key, RETRY_S)
                self.enqueue_later(key, RETRY_S)
            finally:
                self.processing.pop(key, None)
                if key in self.dirty:
                    self.dirty.discard(key)
                    self.enqueue(key)
                self.queue.task_done()
