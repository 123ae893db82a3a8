"""The result every gate returns: a verdict, why, and the evidence behind it.

Gates are pure functions, so they cannot know the time or which candidate the shell is
looking at; `GateOutcome.to_decision` adds those when the shell writes status or an Event.
"""

from __future__ import annotations

from dataclasses import dataclass

from baton.api.decision import Decision, Evidence, Gate, Verdict


@dataclass(frozen=True)
class GateOutcome:
    """What one gate (or the combination of all gates) concluded."""

    verdict: Verdict
    gate: Gate
    reason: str
    message: str
    evidence: tuple[Evidence, ...] = ()

    def to_decision(self, *, candidate: str, time: str) -> Decision:
        """The status/Event record; `time` is RFC 3339, supplied by the shell (the core has no clock)."""
        return Decision(
            verdict=self.verdict,
            gate=self.gate,
            candidate=candidate,
            reason=self.reason,
            message=self.message,
            time=time,
            evidence=list(self.evidence[:16]),
        )
