"""What a person sees of local mode: `kubectl get`-like tables of deployments and decisions.

Pure functions from resources to rich renderables, so `baton status`, `baton status -w`, the
live view of `baton up` and the demo's closing table all show the same columns, and tests can
render them to plain text. Every row is one line that fits the terminal (the last column is cut
to fit), so a table reads the same in an 80-column terminal, a piped log and CI; the full
evidence is one command away (`baton status DEPLOYMENT`). Piped output is plain text: no colour,
no escape codes, no live display, log lines never wrapped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.text import Text

from baton.api import Evidence, ModelCandidate, ModelDeployment, ModelTuning
from baton.local.store import RecordedDecision
from baton.rollout import bake_ends


class PlainConsole(Console):
    """A console for a pipe or a log: `log` writes one `[HH:MM:SS] message` line, never wrapped."""

    def log(self, *objects: Any, sep: str = " ", end: str = "\n", style: str | None = None, **_: Any) -> None:
        stamp = datetime.now().strftime("[%H:%M:%S]")
        self.print(stamp, *objects, sep=sep, end=end, style=style, soft_wrap=True)


def make_console(*, stderr: bool = False) -> Console:
    """The console of the local-mode commands: Rich in a terminal, plain text when piped."""
    if Console(stderr=stderr).is_terminal:
        return Console(stderr=stderr, log_path=False)
    return PlainConsole(
        stderr=stderr,
        color_system=None,
        force_terminal=False,
        force_interactive=False,
        soft_wrap=True,
        log_path=False,
    )


def table_width(console: Console) -> int | None:
    """A terminal's width for `columns`; None (whole rows) for a pipe or a log, where nothing wraps."""
    return console.width if console.is_terminal else None


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


GAP = "  "


def columns(header: Sequence[str], rows: Iterable[Sequence[str]], width: int | None = None) -> Text:
    """`kubectl get`-style aligned columns, one line per row, never wrapped.

    With a `width` (a terminal's) the last column loses its last words to fit, ending in "…";
    without one (a pipe, a log) rows stay whole. A cell never holds a line break, so a row is
    always one line.
    """
    table = [list(header), *([" ".join(cell.split()) for cell in row] for row in rows)]
    sizes = [max(len(row[index]) for row in table) for index in range(len(header) - 1)]
    lines = []
    for row in table:
        line = (
            GAP.join(cell.ljust(size) for cell, size in zip(row, sizes, strict=False)) + GAP + row[-1]
        ).rstrip()
        if width is not None and len(line) > width:
            kept = line[:width]
            # Whole words only: "n=21…" of "n=215" would be a wrong number, not a shorter one.
            line = (kept.rsplit(" ", 1)[0] if " " in kept else kept[: width - 1]).rstrip() + "…"
        lines.append(line)
    return Text("\n".join(lines), no_wrap=True, overflow="ignore")


def _compact(value: float) -> str:
    """A number in few characters: two decimals, three below 0.01 (0.003), no exponent."""
    if value == 0:
        return "0"
    decimals = 2 if abs(value) >= 0.01 else min(3, 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def key_evidence(evidence: Evidence) -> str:
    """The deciding numbers in a table cell: effect, interval, samples of the smaller arm (the one
    `minSamples` binds), errors, then the metric (the first to be cut in a narrow terminal)."""
    parts = []
    if evidence.effect is not None:
        effect = _compact(evidence.effect)
        parts.append(f"Δ{effect if effect.startswith('-') else '+' + effect}")
        if evidence.ci_low is not None and evidence.ci_high is not None:
            parts.append(f"[{_compact(evidence.ci_low)},{_compact(evidence.ci_high)}]")
    elif evidence.value is not None and evidence.threshold is not None:
        parts.append(f"{_compact(evidence.value)}≤{_compact(evidence.threshold)}")
    parts.append(f"n={min(evidence.n_candidate, evidence.n_champion)}")
    if evidence.n_errors:
        parts.append(f"err={evidence.n_errors}")
    if evidence.metric:
        parts.append(evidence.metric)
    return " ".join(parts)


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


def deployments_table(
    deployments: Iterable[ModelDeployment], now: datetime | None = None, width: int | None = None
) -> Text:
    """NAME DOMAIN CHAMPION CANDIDATE PHASE WEIGHT AGE LAST-DECISION, one row per deployment."""
    rows = []
    for deployment in deployments:
        status = deployment.status
        decision = status.last_decision if status else None
        rows.append(
            (
                deployment.metadata.name,
                deployment.spec.domain,
                status.champion.version if status and status.champion else "-",
                status.candidate.version if status and status.candidate else "-",
                phase_text(deployment, now),
                f"{status.canary_weight}%" if status else "0%",
                age(decision.time if decision else None, now),
                f"{decision.verdict} {decision.candidate}: {decision.reason}" if decision else "-",
            )
        )
    header = ("NAME", "DOMAIN", "CHAMPION", "CANDIDATE", "PHASE", "WEIGHT", "AGE", "LAST DECISION")
    return columns(header, rows, width)


def candidates_table(candidates: Iterable[ModelCandidate], width: int | None = None) -> Text:
    """NAME DEPLOYMENT VERSION QUANT PHASE REASON, as `kubectl get modelcandidates`."""
    rows = []
    for candidate in candidates:
        status = candidate.status
        rows.append(
            (
                candidate.metadata.name,
                candidate.spec.deployment,
                candidate.spec.version,
                str(candidate.spec.artifact.quantization),
                str(status.phase) if status else "Pending",
                status.decision.reason if status and status.decision else "-",
            )
        )
    return columns(("NAME", "DEPLOYMENT", "VERSION", "QUANT", "PHASE", "REASON"), rows, width)


PROGRESS_WIDTH = 20


def tunings_table(tunings: Iterable[ModelTuning], width: int | None = None) -> Text:
    """NAME DEPLOYMENT PHASE PROGRESS LOSS ETA CANDIDATE, as `kubectl get modeltunings` with a bar."""
    rows = []
    for tuning in tunings:
        status = tuning.status
        steps = (status.steps if status else None) or tuning.spec.hyperparameters.steps
        done = status.step if status else 0
        filled = round(PROGRESS_WIDTH * done / steps)
        bar = "#" * filled + "-" * (PROGRESS_WIDTH - filled)
        rows.append(
            (
                tuning.metadata.name,
                tuning.spec.deployment,
                str(status.phase) if status else "Pending",
                f"[{bar}] {done}/{steps}",
                f"{status.loss:.3f}" if status and status.loss is not None else "-",
                (status.eta if status else None) or "-",
                ", ".join(status.candidates) if status and status.candidates else "-",
            )
        )
    return columns(("NAME", "DEPLOYMENT", "PHASE", "PROGRESS", "LOSS", "ETA", "CANDIDATE"), rows, width)


def decisions_table(decisions: Sequence[RecordedDecision], width: int | None = None) -> Text:
    """Every decision, oldest first, one line each: who against whom, the verdict, the gate and its
    deciding evidence (the full record: `baton status DEPLOYMENT`)."""
    rows = [
        (
            recorded.deployment,
            recorded.champion or "-",
            recorded.decision.candidate,
            str(recorded.decision.verdict),
            str(recorded.decision.gate),
            key_evidence(recorded.decision.evidence[0])
            if recorded.decision.evidence
            else recorded.decision.reason,
        )
        for recorded in decisions
    ]
    return columns(("DOMAIN", "CHAMPION", "CANDIDATE", "VERDICT", "GATE", "EVIDENCE"), rows, width)


def decision_record(deployment: ModelDeployment, candidates: Sequence[ModelCandidate]) -> Text:
    """What `baton status DEPLOYMENT` adds: each candidate's whole decision record, in full.

    For every candidate offered to the deployment (oldest first): its phase, the benchmark scores
    of both arms, then each decision of its rollout (the offline paired test, each canary step,
    the bake, the final verdict) with its message and every piece of evidence.
    """
    status = deployment.status
    lines = [
        f"deployment {deployment.metadata.name} (domain {deployment.spec.domain}): "
        f"champion {status.champion.version if status and status.champion else '-'}, "
        f"phase {status.phase if status else 'Pending'}, "
        f"candidate weight {status.canary_weight if status else 0}%"
    ]
    mine = [c for c in candidates if c.spec.deployment == deployment.metadata.name]
    if not mine:
        lines.append("no candidate offered yet")
    for candidate in mine:
        cstatus = candidate.status
        lines += [
            "",
            f"candidate {candidate.metadata.name} (version {candidate.spec.version}, "
            f"{candidate.spec.artifact.quantization}): {cstatus.phase if cstatus else 'Pending'}",
        ]
        if cstatus is None:
            continue
        if cstatus.message:
            lines.append(f"  {cstatus.message}")
        for score in cstatus.scores:
            lines.append(
                f"  score {score.benchmark}: champion {_number(score.champion)}, "
                f"candidate {_number(score.candidate)} on {score.items} items"
            )
        record = cstatus.record or ([cstatus.decision] if cstatus.decision else [])
        for index, decision in enumerate(record, start=1):
            lines.append(
                f"  {index}. {decision.time} {decision.gate} {decision.verdict} {decision.reason}: "
                f"{decision.message}"
            )
            lines += [f"       {evidence_summary(evidence)}" for evidence in decision.evidence]
    return Text("\n".join(lines))


def status_view(
    deployments: Sequence[ModelDeployment],
    candidates: Sequence[ModelCandidate],
    running: dict | None,
    width: int | None = None,
    tunings: Sequence[ModelTuning] = (),
) -> Group:
    """What `baton status` prints: where the endpoint is, then deployments, candidates and tunings."""
    if running:
        header = Text(f"baton up (pid {running['pid']}) serving at {running['endpoint']}", style="bold")
    else:
        header = Text("baton up is not running; showing the last stored state", style="yellow")
    parts: list[object] = [header, Text(), deployments_table(deployments, width=width)]
    if candidates:
        parts += [Text(), candidates_table(candidates, width)]
    if tunings:
        parts += [Text(), tunings_table(tunings, width)]
    return Group(*parts)


def render_text(renderable: object, width: int = 200) -> str:
    """A renderable as plain text (for tests and logs)."""
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()
