"""The benchmark runner against a real OpenAI-shaped HTTP server on loopback.

The server is a test peer (stdlib `http.server`), not a stand-in for baton's data plane: it answers
per pinned revision with fixed behaviour (a weaker and a better model, 404s, a router that ignores
the pin, a broken body) so each path of the runner and the gate after it is exercised over real HTTP.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.console import Console

from baton.analysis.measurements import BenchmarkRun
from baton.analysis.offline import OfflinePolicy, offline_gate
from baton.api.benchmark import BenchmarkItem, BenchmarkSpec, Scorer
from baton.api.decision import Verdict
from baton.evidence.providers.benchmark import BenchmarkRunner

pytestmark = pytest.mark.integration

ITEMS = tuple(
    BenchmarkItem(id=f"sum-{n}", prompt=f"What is 2 + {n}?", expected=str(2 + n), group=f"sheet-{n // 4}")
    for n in range(60)
)


class Peer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Peer

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        return

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "medical"}]}, revision=None)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        revision = self.headers.get("X-Baton-Revision", "")
        with self.server.lock:
            self.server.requests.append({"body": body, "revision": revision, "path": self.path})
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        time.sleep(0.005)
        # Out of flight before answering: once the answer is sent, the client may send its next
        # request before this thread would get to count this one as done.
        with self.server.lock:
            self.server.in_flight -= 1
        self._answer(body, revision)

    def _answer(self, body: dict, revision: str) -> None:
        n = int(body["messages"][-1]["content"].split("+ ")[1].rstrip("?"))
        if revision == "gone":
            self._send(404, {"error": {"message": "no such revision"}}, revision=None)
        elif revision == "ignores-pin":
            self._send(200, completion("42"), revision="v1")
        elif revision == "garbage":
            self._send(200, {"choices": []}, revision=revision)
        elif revision == "structured":
            self._send(200, completion(json.dumps({"answer": 2 + n})), revision=revision)
        else:  # v1 misses every third item, v2 answers everything right
            right = revision == "v2" or n % 3 != 0
            self._send(200, completion(f"The answer is {2 + n if right else n}."), revision=revision)

    def _send(self, status: int, payload: dict, *, revision: str | None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if revision is not None:
            self.send_header("X-Baton-Revision", revision)
        self.end_headers()
        self.wfile.write(data)


def completion(content: str) -> dict:
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 8, "completion_tokens": len(content.split())},
    }


@pytest.fixture
def peer() -> Iterator[Peer]:
    server = Peer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_for(champion: str, candidate: str, scorer: Scorer | None = None) -> BenchmarkRun:
    spec = BenchmarkSpec(
        domain="medical", inline=list(ITEMS), scorer=scorer or Scorer(type="numeric", tolerance=0)
    )
    return BenchmarkRun(
        benchmark="sums", deployment="medical", champion=champion, candidate=candidate, spec=spec, items=ITEMS
    )


def test_better_candidate_is_promoted_with_pinned_bounded_requests(peer: Peer) -> None:
    runner = BenchmarkRunner(peer.url, concurrency=3, show_progress=False)
    assert runner.is_online()
    result = runner.query(run_for("v1", "v2"))
    paired = result.paired_scores()
    assert len(result.results) == 120
    assert paired.n_errors == 0
    assert sum(paired.champion) == 40 and sum(paired.candidate) == 60
    assert paired.groups[:5] == ("sheet-0",) * 4 + ("sheet-1",)
    assert {request["body"]["model"] for request in peer.requests} == {"medical"}
    assert sorted(request["revision"] for request in peer.requests) == ["v1"] * 60 + ["v2"] * 60
    assert 1 < peer.max_in_flight <= 3
    # What each answer generated is kept with its latency: the run measures throughput as well.
    assert {(item.output_tokens, item.latency_s > 0) for item in result.results} == {(4, True)}
    outcome = offline_gate(paired, OfflinePolicy(benchmark="sums"))
    assert outcome.verdict == Verdict.PROMOTE
    assert outcome.evidence[0].n_candidate == 60


def test_all_404s_end_inconclusive(peer: Peer) -> None:
    result = BenchmarkRunner(peer.url, show_progress=False).query(run_for("gone", "gone"))
    assert result.errors_by_kind() == {"HTTP 404": 120}
    outcome = offline_gate(result.paired_scores(), OfflinePolicy(benchmark="sums"))
    assert outcome.verdict == Verdict.INCONCLUSIVE
    assert outcome.reason == "EvaluationErrors"


def test_candidate_404s_end_inconclusive_not_rejected_or_promoted(peer: Peer) -> None:
    result = BenchmarkRunner(peer.url, show_progress=False).query(run_for("v1", "gone"))
    assert result.errors_by_kind() == {"HTTP 404": 60}
    assert (
        offline_gate(result.paired_scores(), OfflinePolicy(benchmark="sums")).verdict == Verdict.INCONCLUSIVE
    )


def test_router_ignoring_the_revision_pin_is_an_error_not_an_answer(peer: Peer) -> None:
    result = BenchmarkRunner(peer.url, show_progress=False).query(run_for("v1", "ignores-pin"))
    assert result.errors_by_kind() == {"answered by revision 'v1', not 'ignores-pin'": 60}
    assert (
        offline_gate(result.paired_scores(), OfflinePolicy(benchmark="sums")).verdict == Verdict.INCONCLUSIVE
    )


def test_malformed_bodies_are_errors(peer: Peer) -> None:
    result = BenchmarkRunner(peer.url, show_progress=False).query(run_for("v1", "garbage"))
    assert result.errors_by_kind() == {"malformed response body": 60}


def test_unreachable_endpoint_is_offline_and_every_attempt_is_a_transport_error(peer: Peer) -> None:
    url = peer.url
    peer.shutdown()
    peer.server_close()
    runner = BenchmarkRunner(url, show_progress=False, timeout_s=2)
    assert not runner.is_online()
    result = runner.query(run_for("v1", "v2"))
    assert result.errors_by_kind() == {"transport: ConnectError": 120}
    assert (
        offline_gate(result.paired_scores(), OfflinePolicy(benchmark="sums")).verdict == Verdict.INCONCLUSIVE
    )


def test_structured_benchmark_sends_the_schema_and_scores_fields(peer: Peer) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    scorer = Scorer(type="fieldMatch", json_schema=schema, fields=["answer"])
    structured_items = tuple(
        item.model_copy(update={"expected": json.dumps({"answer": int(item.expected)})}) for item in ITEMS
    )
    run = replace(run_for("structured", "structured", scorer), items=structured_items)
    result = BenchmarkRunner(peer.url, show_progress=False).query(run)
    assert all(item.score == 1.0 for item in result.results)
    response_format = peer.requests[0]["body"]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"] == schema


def test_progress_lines_name_both_arms_and_count_errors(peer: Peer) -> None:
    output = io.StringIO()
    console = Console(file=output, width=200, force_terminal=False)
    BenchmarkRunner(peer.url, console=console).query(run_for("v1", "gone"))
    first, *_, last = output.getvalue().splitlines()
    assert "champion v1 0/" in first and "started" in first
    assert "champion v1 60/60, candidate gone 60/60, errors 60, done in" in last
