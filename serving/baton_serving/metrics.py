"""Prometheus metrics of the data plane, labelled by pool, deployment and revision, never by prompt.

The ingress records every request end to end (it is where a client's latency is seen, and it sees
shadow answers too), so engine replicas record nothing: their slot figures come to the ingress in
the revision status it polls. Ray Serve may run several ingress replicas,
each in its own process: every metric is written in prometheus_client's multiprocess mode into one
directory per pool on the node, and `/metrics` on any replica aggregates all of them. Prometheus
scrapes each Ray pod (the chart's PodMonitor): a scrape addressed to one pod that that pod's proxy
handed to a replica on another pod is answered empty, or two targets would carry the same counts.
"""

from __future__ import annotations

import os
import re
import tempfile
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REVISION_LABELS = ("pool", "deployment", "revision")
UNROUTED = "none"  # deployment/revision label of requests refused before routing

LATENCY_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

REQUESTS = Counter(
    "baton_requests",
    "Inference requests answered, by endpoint and HTTP status code.",
    [*REVISION_LABELS, "endpoint", "code"],
)
REQUEST_ERRORS = Counter(
    "baton_request_errors",
    "Inference requests that failed on the server side (5xx), by OpenAI error type; a client's 4xx "
    "is counted only in baton_requests_total.",
    [*REVISION_LABELS, "endpoint", "type"],
)
SERVER_ERROR = "server_error"


def count_request(labels: tuple[str, ...], endpoint: str, code: str) -> None:
    """One answered request. The revision's server-error series exists from its first request on, at
    0, so an error ratio reads 0 instead of no data before the first failure (and dashboards and
    alerts find the metric in every scrape)."""
    REQUESTS.labels(*labels, endpoint, code).inc()
    REQUEST_ERRORS.labels(*labels, endpoint, SERVER_ERROR)


REQUEST_DURATION = Histogram(
    "baton_request_duration_seconds",
    "End-to-end latency of an inference request, as seen by the ingress (a client's 4xx left out).",
    [*REVISION_LABELS, "endpoint"],
    buckets=LATENCY_BUCKETS_SECONDS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "baton_time_to_first_token_seconds",
    "Time from receiving a request to its first output token. Streamed answers: when the first token "
    "reached the ingress; whole (non-streamed) answers: their latency at the ingress less llama.cpp's "
    "own decoding time after the first token.",
    REVISION_LABELS,
    buckets=LATENCY_BUCKETS_SECONDS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "baton_time_per_output_token_seconds",
    "Mean time between output tokens after the first, per answer of more than one token (streamed or "
    "not, as for the time to first token).",
    REVISION_LABELS,
    buckets=TOKEN_LATENCY_BUCKETS_SECONDS,
)
PROMPT_TOKENS = Counter("baton_prompt_tokens", "Prompt tokens processed.", REVISION_LABELS)
OUTPUT_TOKENS = Counter("baton_output_tokens", "Output tokens generated.", REVISION_LABELS)
IN_FLIGHT = Gauge(
    "baton_requests_in_flight",
    "Inference requests being answered right now.",
    REVISION_LABELS,
    multiprocess_mode="livesum",
)
STRUCTURED_OUTPUTS = Counter(
    "baton_structured_outputs",
    "Answers constrained by a JSON schema (the request's response_format or the deployment's default), "
    "by endpoint and whether they parse and validate against it.",
    [*REVISION_LABELS, "endpoint", "valid"],
)
SHADOW_COMPARISONS = Counter(
    "baton_shadow_comparisons",
    "Shadow answers compared with the answer returned to the client (revision is the shadow's).",
    [*REVISION_LABELS, "outcome"],
)
REVISION_READY = Gauge(
    "baton_revision_ready",
    "1 when the revision's engine loaded a verified artifact, 0 while loading or after refusing it.",
    REVISION_LABELS,
    multiprocess_mode="mostrecent",
)

# An engine replica's llama-server, as the ingress's status probe last saw it (every 5 s once the
# revision settled; with several replicas of a revision, the one that answered the probe).
ENGINE_SLOTS = Gauge(
    "baton_engine_slots",
    "Requests one engine replica decodes at once (llama-server's --parallel slots).",
    REVISION_LABELS,
    multiprocess_mode="mostrecent",
)
ENGINE_SLOTS_BUSY = Gauge(
    "baton_engine_slots_busy",
    "Slots of an engine replica decoding a request.",
    REVISION_LABELS,
    multiprocess_mode="mostrecent",
)
ENGINE_QUEUE_DEPTH = Gauge(
    "baton_engine_queue_depth",
    "Requests an engine replica's llama-server holds waiting for a free slot.",
    REVISION_LABELS,
    multiprocess_mode="mostrecent",
)
ENGINE_RESTARTS = Gauge(
    "baton_engine_restarts",
    "How often an engine replica's llama-server died and was started again.",
    REVISION_LABELS,
    multiprocess_mode="mostrecent",
)


def record_engine(pool: str, key: tuple[str, str], status: dict) -> None:
    """The engine figures of one revision status (a replica that refused its artifact has none)."""
    labels = (pool, *key)
    if "restarts" in status:
        ENGINE_RESTARTS.labels(*labels).set(status["restarts"])
    slots = status.get("slots")
    if slots is not None:
        ENGINE_SLOTS.labels(*labels).set(slots["total"])
        ENGINE_SLOTS_BUSY.labels(*labels).set(slots["busy"])
        ENGINE_QUEUE_DEPTH.labels(*labels).set(slots["queued"])


KEY_LABELS = ("pool", "key")
KEY_REQUESTS = Counter(
    "baton_api_key_requests",
    "Inference requests per API key (its id, never the key), by outcome: admitted, "
    "rate_limit_exceeded or concurrency_limit_exceeded (429), model_not_permitted (403).",
    [*KEY_LABELS, "outcome"],
)
KEY_IN_FLIGHT = Gauge(
    "baton_api_key_requests_in_flight",
    "Admitted inference requests per API key being answered right now (its concurrency quota's use).",
    KEY_LABELS,
    multiprocess_mode="livesum",
)
AUTH_FAILURES = Counter(
    "baton_auth_failures",
    "Requests refused with 401, by OpenAI error code (missing_api_key, invalid_api_key).",
    ["pool", "code"],
)


def default_multiprocess_dir(pool: str) -> Path:
    return Path(tempfile.gettempdir()) / "baton-metrics" / pool


def prepare_multiprocess_dir(directory: Path) -> None:
    """Create the directory and drop files of processes that are gone (an earlier run's replicas)."""
    directory.mkdir(parents=True, exist_ok=True)
    for file in directory.glob("*.db"):
        match = re.search(r"_(\d+)\.db$", file.name)
        if match and not _process_alive(int(match.group(1))):
            file.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host_address(host: str | None) -> IPv4Address | IPv6Address | None:
    """The IP address a request's Host header names (`10.244.0.7:8000`, `[fd00::7]:8000`), or None
    for a name (a Service's, `localhost`) or a malformed header.

    A scrape of a pod's Serve port reaches whichever ingress replica that pod's proxy picks, on any
    Ray node; the address Prometheus scraped tells the ingress which node's target is asking.
    """
    if not host:
        return None
    try:
        name = urlsplit(f"//{host}").hostname
        return ip_address(name) if name else None
    except ValueError:
        return None


def exposition() -> bytes:
    """The text exposition of every process of this pool on the node (or of this process alone)."""
    directory = os.environ.get(MULTIPROC_ENV)
    registry = CollectorRegistry()
    if directory:
        MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
