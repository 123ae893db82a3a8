"""Every evidence task ends in a recorded outcome: Inconclusive with the error class, an Event, backoff.

The failures are real ones (a missing Benchmark, an invalid regex, items that do not validate, a
ConfigMap a laptop does not have, an ingress that does not answer, a directory that is not there),
injected into the code both shells run. No message may echo the input's content.
"""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from baton.api import Benchmark, ModelSource, Phase, Verdict
from baton.evidence.benchmarks import BenchmarkSettings, footprint, run_benchmarks
from baton.evidence.core import Footprint
from baton.evidence.ingress import Ingress
from baton.evidence.samples import MAX_SAMPLE_FAILURES, CanarySampler, parse_exposition
from baton.evidence.sources import SourcePoller
from baton.evidence.supervision import FAILED_REASON
from baton.rollout import ObserveCanary, RunBenchmark
from baton_serving.config import FetchPolicy
from tests.unit.evidence.stores import RecordingStore
from tests.unit.rollout.helpers import CANDIDATE, CHAMPION, deployment, in_phase

pytestmark = pytest.mark.unit
SECRET = "PATIENT-NAME-7f3a"  # input content that must never reach a message
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def dead_ingress() -> Ingress:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return Ingress(f"http://127.0.0.1:{port}")


def benchmark(**spec) -> Benchmark:
    base = {
        "domain": "medical",
        "scorer": {"type": "exact"},
        "inline": [{"id": "1", "prompt": "p", "expected": "x"}],
    }
    return Benchmark.model_validate({"metadata": {"name": "medical-qa"}, "spec": base | spec})


def run(tmp_path: Path, documents) -> tuple:
    store = RecordingStore(tmp_path)
    action = RunBenchmark(CHAMPION, CANDIDATE, ("medical-qa",))
    settings = BenchmarkSettings(fetch=FetchPolicy(local_roots=[str(tmp_path)]))
    outcome = run_benchmarks(dead_ingress(), store, deployment(), action, documents, settings)
    return outcome, store


def items_file(tmp_path: Path, lines: list[str]) -> dict:
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return {"url": path.as_uri(), "digest": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()}


@pytest.mark.parametrize(
    ("documents", "error"),
    [
        pytest.param(lambda tmp: {"medical-qa": None}, "EvidenceError", id="benchmark-missing"),
        pytest.param(
            lambda tmp: {
                "medical-qa": benchmark(scorer={"type": "exact"}).model_dump(by_alias=True)
                | {"spec": {"domain": "medical", "scorer": {"type": "regex", "pattern": f"({SECRET}"}}}
            },
            "ValidationError",
            id="invalid-regex",
        ),
        pytest.param(
            lambda tmp: {
                "medical-qa": benchmark(
                    inline=None, uri=items_file(tmp, [json.dumps({"id": 1, "prompt": SECRET})])
                )
            },
            "ValidationError",
            id="items-do-not-validate",
        ),
        pytest.param(
            lambda tmp: {"medical-qa": benchmark(inline=None, uri=items_file(tmp, [f"{{{SECRET}"]))},
            "ValidationError",
            id="items-not-json",
        ),
        pytest.param(
            lambda tmp: {
                "medical-qa": benchmark(inline=None, configMapRef={"name": "items", "key": "items.yaml"})
            },
            "EvidenceError",
            id="configmap-on-a-laptop",
        ),
        pytest.param(
            lambda tmp: {"medical-qa": {"metadata": {"name": "medical-qa"}, "spec": {"domain": SECRET}}},
            "ValidationError",
            id="benchmark-invalid",
        ),
    ],
)
def test_a_benchmark_that_cannot_run_is_inconclusive_with_an_event(tmp_path, documents, error) -> None:
    outcome, store = run(tmp_path, documents(tmp_path))
    result = outcome.result.outcome
    assert result.verdict == Verdict.INCONCLUSIVE and result.reason == "EvaluationFailed"
    assert error in result.message and SECRET not in result.message
    assert outcome.scores == []
    ((involved, type_, reason, message),) = store.events
    assert (involved, type_, reason) == (("ModelDeployment", "medical"), "Warning", FAILED_REASON)
    assert error in message and SECRET not in message


def test_a_data_plane_that_does_not_answer_is_not_benchmarked(tmp_path) -> None:
    outcome, store = run(tmp_path, {"medical-qa": benchmark()})
    assert outcome.result.outcome.verdict == Verdict.INCONCLUSIVE
    ((_, _, reason, message),) = store.events
    assert reason == FAILED_REASON and "does not answer" in message


ACTION = ObserveCanary(CHAMPION, CANDIDATE, 0, "2026-12-02T06:00:00.000Z", "2026-12-02T06:00:30.000Z")


def test_canary_sampling_retries_with_backoff_then_ends_inconclusive(tmp_path) -> None:
    store = RecordingStore(tmp_path)
    sampler = CanarySampler(store)
    ingress = dead_ingress()
    resource = deployment(analysis={"metrics": [{"name": "errors", "kind": "errorRate"}]})
    at, waits = NOW, []
    for attempt in range(1, MAX_SAMPLE_FAILURES + 1):
        assert sampler.sample(
            resource, ACTION, lambda: parse_exposition(ingress.metrics_text()), at
        ).result is None or (attempt == MAX_SAMPLE_FAILURES)
        if attempt == MAX_SAMPLE_FAILURES:
            break
        # Within the backoff nothing is read; after it, the next attempt.
        assert sampler.sample(resource, ACTION, lambda: 1 / 0, at + timedelta(seconds=0.5)).failure is None
        wait = 2 ** (attempt - 1)
        waits.append(wait)
        at += timedelta(seconds=wait)
    sample = sampler.sample(resource, ACTION, lambda: {}, at + timedelta(seconds=60))
    assert sample.result is not None and sample.result.outcome.verdict != Verdict.INCONCLUSIVE  # recovered
    assert waits == [1, 2, 4, 8]
    assert [event[2] for event in store.events] == [FAILED_REASON, FAILED_REASON]  # first failure, the last
    assert "ConnectError" in store.events[0][3]


def test_the_last_failed_sample_records_an_inconclusive_step(tmp_path) -> None:
    sampler = CanarySampler(RecordingStore(tmp_path))
    resource = deployment(analysis={"metrics": [{"name": "errors", "kind": "errorRate"}]})
    result, at = None, NOW
    for _ in range(MAX_SAMPLE_FAILURES):
        sample = sampler.sample(resource, ACTION, lambda: parse_exposition(f"{SECRET} not an exposition"), at)
        result, at = sample.result, at + timedelta(minutes=5)
    assert result is not None and (result.step, result.candidate) == (0, CANDIDATE)
    assert result.outcome.verdict == Verdict.INCONCLUSIVE and SECRET not in result.outcome.message


def test_a_source_that_cannot_be_read_says_so_and_keeps_polling(tmp_path) -> None:
    missing = tmp_path / "releases"
    source = ModelSource.model_validate(
        {
            "metadata": {"name": "drops", "generation": 1},
            "spec": {"deployment": "medical", "directory": {"path": str(missing)}, "pollInterval": "30s"},
        }
    )
    store = RecordingStore(tmp_path / "state", {"drops": source})
    poller = SourcePoller(store, FetchPolicy(local_roots=[str(tmp_path)]))
    first = poller.poll(source, NOW)
    (ready,) = first.status.conditions
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "PollFailed")
    assert "FileNotFoundError" in ready.message
    assert first.next_in == 1.0 and poller.poll(source, NOW).next_in == 2.0  # backoff, below the interval
    assert [event[2] for event in store.events] == [FAILED_REASON, FAILED_REASON]
    missing.mkdir()
    recovered = poller.poll(store._sources["drops"], NOW)
    assert recovered.next_in == 30.0 and recovered.status.conditions[0].status == "True"


def test_the_footprint_is_of_the_two_revisions_the_run_compares() -> None:
    resource = in_phase(Phase.BENCHMARKING)
    status = resource.status
    sized = status.model_copy(
        update={
            "champion": status.champion.model_copy(
                update={"artifact": status.champion.artifact.model_copy(update={"size_bytes": 3_500_000})}
            ),
            "candidate": status.candidate.model_copy(
                update={"artifact": status.candidate.artifact.model_copy(update={"size_bytes": 2_000_000})}
            ),
        }
    )
    resource = resource.model_copy(update={"status": sized})
    assert footprint(resource, RunBenchmark(CHAMPION, CANDIDATE, ("q",))) == Footprint(3_500_000, 2_000_000)
    # A run about other revisions (a stale action) has no size to compare: the gain is unmeasured.
    assert footprint(resource, RunBenchmark(CHAMPION, "medical-v9", ("q",))) == Footprint(3_500_000, None)
