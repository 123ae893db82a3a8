"""How an evidence task fails: one recorded outcome, one Event, a retry with backoff where it helps.

Evidence tasks (a benchmark run, a canary sample, a ModelSource poll) read things a user controls:
items, regexes, schemas, files, indexes, metrics. Any of them may raise anything. Whatever it is,
the task ends in a `TaskFailure`: the error's class and a message that names what failed but never
echoes input content (a YAML error quotes the document, a validation error the value), recorded as
an Inconclusive outcome (benchmark, sampling) or a condition (source), and posted as an Event.
Source polling and sampling are retried with exponential backoff; a benchmark run is not (it is
asked for again by the core only if the spec changes), since rerunning a broken suite proves
nothing new.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from baton.evidence.core import GateOutcome, evaluation_failed
from baton.evidence.ports import Involved, Store
from baton_serving.fetch import FetchError

log = logging.getLogger("baton.evidence")
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
FAILED_REASON = "EvidenceTaskFailed"


class EvidenceError(Exception):
    """A failure whose message this layer wrote from names alone (files, fields): safe to show."""


def safe_message(error: BaseException) -> str:
    """The error's class, and what failed where that can be said without the input's content."""
    kind = type(error).__name__
    if isinstance(error, EvidenceError | FetchError):
        return f"{kind}: {error}"
    if isinstance(error, ValidationError):
        first = error.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        return f"{kind}: {error.error_count()} error(s), first at {where}: {first['type']}"
    if isinstance(error, httpx.HTTPStatusError):
        return f"{kind}: HTTP {error.response.status_code}"
    if isinstance(error, OSError) and error.strerror:
        return f"{kind}: {error.strerror}"
    if isinstance(error, re.error):
        return f"{kind}: {error.msg} at position {error.pos}"
    return kind


@dataclass(frozen=True)
class TaskFailure:
    """One failed attempt of an evidence task; `attempt` counts the failures in a row."""

    task: str
    error_class: str
    message: str
    attempt: int = 1

    @classmethod
    def of(cls, task: str, error: BaseException, attempt: int = 1) -> TaskFailure:
        return cls(task, type(error).__name__, safe_message(error), attempt)

    @property
    def text(self) -> str:
        return f"{self.task} failed: {self.message}"

    @property
    def retry_in(self) -> float:
        """Seconds until the next attempt: 1, 2, 4, ... up to a minute."""
        return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self.attempt - 1))

    def outcome(self) -> GateOutcome:
        """The Inconclusive outcome this failure records: an evaluation that failed is never a pass."""
        return evaluation_failed(self.task, f"failed: {self.message}")


def report(store: Store, involved: Involved, failure: TaskFailure) -> None:
    """Log and post the failure as a Warning Event; a store that cannot take the Event is logged only."""
    log.warning("%s %s: %s (attempt %d)", *involved, failure.text, failure.attempt)
    try:
        store.event(involved, "Warning", FAILED_REASON, failure.text)
    except Exception as error:
        log.error("%s %s: posting the failure Event failed: %s", *involved, safe_message(error))
