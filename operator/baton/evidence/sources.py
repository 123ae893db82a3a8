"""ModelSource polling: one poll discovers releases, offers the new ones as candidates and says how it went.

Creation is idempotent (an existing name is left alone, bytes already offered are not offered
again), so a restarted shell polling again creates nothing twice. A poll that fails — an
unreadable directory, an index that is down or malformed, a store that refuses the candidate —
sets the source's `Ready` condition to False with the error class, posts an Event, and the next
poll comes after a backoff instead of the poll interval; a poll never ends the polling.

A release the source refuses (a corrupt or missing blob, weights republished under a version
already offered, a name outside the source's root) does not fail the poll: it is listed in the
status's `rejected`, sets `Degraded`, and posts a Warning Event the first time it is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from baton.api import ModelSource
from baton.api.candidate import REJECTED_LIMIT, ModelSourceStatus
from baton.api.common import ConditionStatus
from baton.evidence.catalogs import discover
from baton.evidence.ports import Store
from baton.evidence.releases import DigestCache, Rejection, Release, candidate_document, new_releases
from baton.evidence.supervision import TaskFailure, report
from baton.rollout import format_time, merge_conditions, parse_duration
from baton_serving.config import FetchPolicy


@dataclass(frozen=True)
class Poll:
    """What one poll wrote, and the seconds until the next."""

    status: ModelSourceStatus
    next_in: float
    failure: TaskFailure | None = None


class SourcePoller:
    """Polls one ModelSource; keeps the digests it computed and the failures in a row."""

    def __init__(self, store: Store, policy: FetchPolicy) -> None:
        self.store = store
        self.policy = policy
        self.digests = DigestCache()
        self.failures = 0

    def poll(self, source: ModelSource, now: datetime) -> Poll:
        """One poll; never raises (a failure is in the status, an Event and the backoff)."""
        previous = source.status or ModelSourceStatus()
        created, releases, rejected, failure = 0, list[Release](), list[Rejection](), None
        try:
            found = discover(source, self.digests, self.policy)
            releases = found.releases
            fresh, republished = new_releases(
                releases, source.spec.deployment, self.store.candidates(), source.spec.quantizations
            )
            rejected = [*found.rejected, *republished]
            self._report_new(source, rejected, previous.rejected)
            for release in fresh:
                document = candidate_document(
                    source.spec.deployment,
                    release,
                    labels=source.spec.candidate_labels,
                    source=source.metadata.model_dump(exclude_none=True),
                    named_by_quantization=bool(source.spec.quantizations),
                )
                created += self.store.create_candidate(document)
        except Exception as error:
            self.failures += 1
            failure = TaskFailure.of(f"polling ModelSource {source.metadata.name}", error, self.failures)
            report(self.store, ("ModelSource", source.metadata.name), failure)
        else:
            self.failures = 0
        stamp = format_time(now)
        ready = (
            (ConditionStatus.TRUE, "Polled", "")
            if failure is None
            else (ConditionStatus.FALSE, "PollFailed", failure.text)
        )
        changed = [("Ready", *ready)]
        if failure is None:
            changed.append(("Degraded", *_degraded(rejected)))
        status = ModelSourceStatus(
            observed_generation=source.metadata.generation,
            last_poll_time=stamp,
            discovered=previous.discovered + created,
            last_version=releases[-1].version if releases else previous.last_version,
            rejected=previous.rejected if failure else [r.text() for r in rejected[:REJECTED_LIMIT]],
            conditions=merge_conditions(previous.conditions, changed, source.metadata.generation, stamp),
        )
        try:
            self.store.write_source_status(source.metadata.name, status)
        except Exception as error:
            failure = failure or TaskFailure.of("writing the ModelSource status", error, self.failures + 1)
            report(self.store, ("ModelSource", source.metadata.name), failure)
        interval = parse_duration(source.spec.poll_interval)
        return Poll(status, interval if failure is None else min(interval, failure.retry_in), failure)

    def _report_new(self, source: ModelSource, rejected: list[Rejection], reported: list[str]) -> None:
        """A Warning Event for each refusal the status does not list yet (it stays listed while it lasts)."""
        for rejection in rejected:
            if rejection.text() not in reported:
                self.store.event(
                    ("ModelSource", source.metadata.name), "Warning", rejection.reason, rejection.text()
                )


def _degraded(rejected: list[Rejection]) -> tuple[ConditionStatus, str, str]:
    if not rejected:
        return ConditionStatus.FALSE, "NothingRefused", ""
    shown = "; ".join(rejection.text() for rejection in rejected[:3])
    more = f" (and {len(rejected) - 3} more)" if len(rejected) > 3 else ""
    return ConditionStatus.TRUE, rejected[0].reason, f"{len(rejected)} release(s) refused: {shown}{more}"
