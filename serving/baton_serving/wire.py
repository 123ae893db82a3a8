"""The data plane's wire contract: names the control plane and the ingress must spell alike.

The operator pins benchmark requests to a revision, reads the ingress's revision statuses and its
metrics exposition, and validates the artifacts it hands over; each of those names is defined
here once. This module has no side effect and imports nothing beyond the standard library, so the
control plane may import it without loading Ray, FastAPI or Prometheus collectors.
"""

from __future__ import annotations

from enum import StrEnum

# Request header pinning a request to one revision (the operator's benchmark identity), and the
# response header naming the revision that answered.
REVISION_HEADER = "X-Baton-Revision"
# The ingress's per-revision engine statuses ({deployment: {revision: {ready, error}}}).
REVISIONS_PATH = "/v1/baton/revisions"
METRICS_PATH = "/metrics"
# `endpoint` label values of client traffic (OpenAI's API and Ollama's: the canary counts both),
# and of a revision's answers to mirrored requests.
CLIENT_ENDPOINTS = frozenset({"chat_completions", "completions", "ollama_chat", "ollama_generate"})
SHADOW_ENDPOINT = "shadow"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


def field_path(loc: tuple[int | str, ...]) -> str | None:
    """A validation error's location as the field path both APIs print: `messages[3].content`,
    `spec.rollout.steps[1].weight` (OpenAI's `param`, the Kubernetes API server's field path)."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or None


def is_client_error(status: int) -> bool:
    """A 4xx: the request's fault. It never counts against the revision it was routed to (as an
    error, a latency or a canary sample), or a client could force a rollback with bad requests."""
    return 400 <= status < 500


def is_server_error(status: int) -> bool:
    """A 5xx: a failure of the revision (engine error, timeout, not serving); it counts against it."""
    return status >= 500


class Quantization(StrEnum):
    """Weight format of an artifact. GGUF types for llama.cpp (TQ1_0/TQ2_0 are its ternary, 1.58-bit
    types), the others for vLLM; NONE is an unquantized checkpoint."""

    F32 = "F32"
    F16 = "F16"
    BF16 = "BF16"
    Q8_0 = "Q8_0"
    Q6_K = "Q6_K"
    Q5_K_M = "Q5_K_M"
    Q4_K_M = "Q4_K_M"
    Q4_0 = "Q4_0"
    TQ2_0 = "TQ2_0"
    TQ1_0 = "TQ1_0"
    AWQ = "AWQ"
    GPTQ = "GPTQ"
    FP8 = "FP8"
    NONE = "NONE"
