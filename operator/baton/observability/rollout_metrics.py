"""Rollout metrics: what the control plane exports about each deployment's rollout, for Prometheus.

The data plane measures requests; only the control plane knows phases, canary weights, decisions
and benchmark scores. A shell (the operator, or local mode) calls `observe_deployment` and
`observe_candidate` after each status it writes and `serve` once; the dashboards' weight-over-time
panel, decision annotations and rollout alerts read what this module exports.

Decisions are counted from `status.history` as they appear. The first status seen for a deployment
creates every verdict/gate series at 0 and only sets a watermark, so a restarted shell does not
count the history it finds again (the counter restarts at zero, which `rate` and `increase` handle).
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from baton.api.candidate import ModelCandidate
from baton.api.decision import Gate, Verdict
from baton.api.deployment import ModelDeploymentStatus, Phase

DEPLOYMENT_LABELS = ("namespace", "deployment")


class RolloutMetrics:
    """The rollout metric families in their own registry, updated from status objects."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.phase = Gauge(
            "baton_rollout_phase",
            "1 for the current rollout phase of a deployment, 0 for every other phase.",
            [*DEPLOYMENT_LABELS, "phase"],
            registry=self.registry,
        )
        self.canary_weight = Gauge(
            "baton_rollout_canary_weight",
            "Percent of live traffic the router sends to the deployment's candidate.",
            DEPLOYMENT_LABELS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "baton_rollout_decisions",
            "Final rollout decisions, by verdict and the gate that decided.",
            [*DEPLOYMENT_LABELS, "verdict", "gate"],
            registry=self.registry,
        )
        self.benchmark_score = Gauge(
            "baton_benchmark_score",
            "Mean per-item score in [0, 1] of the champion or the candidate on an offline-gate benchmark.",
            [*DEPLOYMENT_LABELS, "candidate", "arm", "benchmark"],
            registry=self.registry,
        )
        self._counted_until: dict[tuple[str, str], str] = {}

    def observe_deployment(self, namespace: str, name: str, status: ModelDeploymentStatus) -> None:
        for phase in Phase:
            self.phase.labels(namespace, name, phase.value).set(1 if status.phase == phase.value else 0)
        self.canary_weight.labels(namespace, name).set(status.canary_weight)
        key = (namespace, name)
        newest = max((decision.time for decision in status.history), default="")
        if key not in self._counted_until:
            # Every series starts at 0, so `increase` and `changes` see the first decision too.
            for verdict in Verdict:
                for gate in Gate:
                    self.decisions.labels(namespace, name, verdict.value, gate.value)
        else:
            # RFC 3339 times in UTC compare correctly as strings.
            for decision in status.history:
                if decision.time > self._counted_until[key]:
                    self.decisions.labels(namespace, name, decision.verdict, decision.gate).inc()
        self._counted_until[key] = max(newest, self._counted_until.get(key, ""))

    def observe_candidate(self, namespace: str, candidate: ModelCandidate) -> None:
        if candidate.status is None:
            return
        deployment, version = candidate.spec.deployment, candidate.spec.version
        for score in candidate.status.scores:
            for arm, value in (("champion", score.champion), ("candidate", score.candidate)):
                if value is not None:
                    self.benchmark_score.labels(namespace, deployment, version, arm, score.benchmark).set(
                        value
                    )

    def serve(self, port: int, address: str = "0.0.0.0") -> WSGIServer:
        """Expose `/metrics` on `address:port` from a background thread; `shutdown()` the result to stop."""
        server, _ = start_http_server(port, addr=address, registry=self.registry)
        return server
