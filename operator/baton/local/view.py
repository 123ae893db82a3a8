"""What a person sees of local mode: `kubectl get`-like tables of deployments and decisions.

Pure functions from resources to rich renderables, so `baton status`, `baton status -w`, the
live view of `baton up` and the demo's closing table all show the same columns, and tests can
render them to plain text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from baton.api import Decision, Evidence, ModelCandidate, ModelDeployment
from baton.rollout import bake_ends


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def evidence_summary(evidence: Evidence) -> str:
    """One line: test, sample sizes, effect with its interval, p- or e-value."""
    parts = [evidence.test]
    if evidence.metric:
        parts.append(evidence.metric)
    parts.append(f"n={evidence.n_candidate}/{evidence.n_champion}")
    if evidence.effect is not None:
        interval = (
            f" [{_number(evidence.ci_low)}, {_number(evidence.ci_high)}]"
            if evidence.ci_low is not None and evidence.ci_high is not None
            else ""
        )
        parts.append(f"effect={evidence.effect:+.3f}{interval}")
    if evidence.p_value is not None:
        parts.append(f"p={_number(evidence.p_value)}")
    if evidence.e_value is not None:
        parts.append(f"e={_number(evidence.e_value)}")
    if evidence.threshold is not None:
        parts.append(f"threshold={_number(evidence.threshold)}")
    if evidence.n_errors:
        parts.append(f"errors={evidence.n_errors}")
    return " ".join(parts)


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """`kubectl`-style age: 42s, 7m, 3h, 2d."""
    if not timestamp:
        return "-"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def phase_text(deployment: ModelDeployment, now: datetime | None = None) -> str:
    """The phase; while baking also which version is kept loaded (and mirrored) and for how long."""
    status = deployment.status
    if status is None:
        return "Pending"
    ends = bake_ends(deployment.spec, status)
    if ends is None or status.previous is None:
        return str(status.phase)
    left = max(0, int((ends - (now or datetime.now(UTC))).total_seconds()))
    return f"{status.phase} ({status.previous.version} mirrored, {left}s left)"


def deployments_table(deployments: Iterable[ModelDeployment], now: datetime | None = None) -> Table:
    """NAME DOMAIN CHAMPION CANDIDATE PHASE WEIGHT DECISION AGE, one row per deployment."""
    table = Table(box=None, pad_edge=False, title=None)
    for column in (
        "NAME",
        "DOMAIN",
        "CHAMPION",
        "CANDIDATE",
        "PHASE",
        "WEIGHT",
        "LAST DECISION",
        "EVIDENCE",
        "AGE",
    ):
        table.add_column(column, overflow="fold")
    for deployment in deployments:
        status = deployment.status
        decision = status.last_decision if status else None
        table.add_row(
            deployment.metadata.name,
            deployment.spec.domain,
            status.champion.version if status and status.champion else "-",
            status.candidate.version if status and status.candidate else "-",
            phase_text(deployment, now),
            f"{status.canary_weight}%" if status else "0%",
            f"{decision.verdict} {decision.candidate}: {decision.reason}" if decision else "-",
            "; ".join(evidence_summary(e) for e in decision.evidence) if decision else "",
            age(decision.time if decision else None, now),
        )
    return table


def candidates_table(candidates: Iterable[ModelCandidate]) -> Table:
    """NAME DEPLOYMENT VERSION QUANT PHASE REASON, as `kubectl get modelcandidates`."""
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "DEPLOYMENT", "VERSION", "QUANT", "PHASE", "REASON"):
        table.add_column(column, overflow="fold")
    for candidate in candidates:
        status = candidate.status
        table.add_row(
            candidate.metadata.name,
            candidate.spec.deployment,
            candidate.spec.version,
            str(candidate.spec.artifact.quantization),
            str(status.phase) if status else "Pending",
            status.decision.reason if status and status.decision else "-",
        )
    return table


def decisions_table(decisions: Sequence[tuple[str, Decision]], title: str | None = None) -> Table:
    """Every decision with its gate and evidence, oldest first."""
    table = Table(box=None, pad_edge=False, title=title)
    for column in ("DEPLOYMENT", "CANDIDATE", "VERDICT", "GATE", "REASON", "EVIDENCE"):
        table.add_column(column, overflow="fold")
    for deployment, decision in decisions:
        table.add_row(
            deployment,
            decision.candidate,
            str(decision.verdict),
            str(decision.gate),
            decision.reason,
            "\n".join(evidence_summary(e) for e in decision.evidence) or decision.message,
        )
    return table


def status_view(
    deployments: Sequence[ModelDeployment], candidates: Sequence[ModelCandidate], running: dict | None
) -> Group:
    """What `baton status` prints: where the endpoint is, then deployments, then candidates."""
    if running:
        header = Text(f"baton up (pid {running['pid']}) serving at {running['endpoint']}", style="bold")
    else:
        header = Text("baton up is not running; showing the last stored state", style="yellow")
    parts: list[object] = [header, Text(), deployments_table(deployments)]
    if candidates:
        parts += [Text(), candidates_table(candidates)]
    return Group(*parts)


def render_text(renderable: object, width: int = 200) -> str:
    """A renderable as plain text (for tests and logs)."""
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()
