"""The evidence baton writes down with every decision.

A rollout verdict is only trustworthy if it can be audited: this record goes into the status
of the ModelDeployment and ModelCandidate and into the Kubernetes Event of the decision.
The analysis core produces it; nothing else invents numbers.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from baton.api.common import BatonModel
from baton_serving.wire import Quantization


class Verdict(StrEnum):
    """What an analysis concluded. Only `Promote` ever moves traffic forward."""

    PROMOTE = "Promote"
    REJECT = "Reject"
    CONTINUE = "Continue"
    INCONCLUSIVE = "Inconclusive"


class Gate(StrEnum):
    """Which gate decided: sanity checks, the offline benchmark, or the online canary."""

    SANITY = "sanity"
    OFFLINE = "offline"
    ONLINE = "online"
    MANUAL = "manual"


class Evidence(BatonModel):
    """Numbers behind a verdict: sample sizes, effect, interval, test statistic and thresholds."""

    test: str = Field(description="Statistical test used, e.g. `mcnemar-exact`, `paired-bootstrap`, `msprt`.")
    metric: str = Field(default="", description="Metric or benchmark the test ran on.")
    n_champion: int = Field(ge=0, description="Valid samples from the champion.")
    n_candidate: int = Field(ge=0, description="Valid samples from the candidate.")
    n_errors: int = Field(
        default=0, ge=0, description="Evaluation attempts that failed (transport/HTTP errors)."
    )
    effect: float | None = Field(
        default=None, description="Estimated effect, candidate minus champion (positive = candidate better)."
    )
    ci_low: float | None = Field(
        default=None, description="Lower bound of the confidence interval of the effect."
    )
    ci_high: float | None = Field(
        default=None, description="Upper bound of the confidence interval of the effect."
    )
    p_value: float | None = Field(default=None, ge=0, le=1, description="p-value of a fixed-sample test.")
    e_value: float | None = Field(
        default=None, ge=0, description="e-value of an anytime-valid sequential test."
    )
    alpha: float | None = Field(
        default=None, gt=0, lt=1, description="Significance level used (statistical tests only)."
    )
    margin: float | None = Field(default=None, description="Non-inferiority margin used, if any.")
    threshold: float | None = Field(
        default=None, description="Threshold a metric was compared against, if any."
    )
    value: float | None = Field(
        default=None, description="Observed value that was compared with `threshold`."
    )
    n_clusters: int | None = Field(
        default=None,
        ge=0,
        description="Independent item clusters (effective sample size of cluster-robust tests).",
    )
    looks: int | None = Field(default=None, ge=0, description="Interim looks a sequential test has taken.")


class Decision(BatonModel):
    """One verdict of one gate about one candidate, with its evidence."""

    verdict: Verdict = Field(description="`Promote`, `Reject`, `Continue` or `Inconclusive`.")
    gate: Gate = Field(description="Which gate decided.")
    candidate: str = Field(description="Version of the candidate the decision is about.")
    quantization: Quantization | None = Field(
        default=None,
        description=(
            "Quantization of the candidate's artifact: one version may be offered in several, each "
            "decided on its own."
        ),
    )
    reason: str = Field(
        description="CamelCase reason, e.g. `BenchmarkSuperior`, `TooFewSamples`, `ErrorRateSLO`."
    )
    message: str = Field(default="", description="One human-readable sentence that explains the decision.")
    time: str = Field(description="RFC 3339 time of the decision.")
    evidence: list[Evidence] = Field(
        default_factory=list, max_length=16, description="Evidence per test that contributed."
    )
