"""Which revision answers a request: the weighted champion/candidate split, stickiness and pinning.

Pure functions of the route policy and the request; the ingress owns one `Router` per deployment
and swaps it when Ray Serve delivers new weights through `reconfigure`, so engines never restart.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection
from dataclasses import dataclass

from baton_serving.config import RoutePolicy


class NoServableRevisionError(Exception):
    """Every revision with weight is unavailable (still loading or refused)."""


@dataclass(frozen=True)
class Router:
    """Chooses the answering revision of one deployment."""

    deployment: str
    policy: RoutePolicy

    def choose(
        self,
        ready: Collection[str],
        session_key: str | None = None,
        rng: random.Random | None = None,
    ) -> str:
        """Pick a revision among `ready` ones by weight.

        With a session key the pick is a deterministic function of (deployment, key, weights): the
        same session stays on the same revision while the weights stay. Revisions are laid out in
        declaration order on [0, 1), so raising a candidate's weight only moves sessions onto it.
        Weight on revisions that are not ready falls to the ready ones.
        """
        weighted = [
            (name, weight) for name, weight in self.policy.weights.items() if weight > 0 and name in ready
        ]
        if not weighted:
            raise NoServableRevisionError(
                f"deployment {self.deployment!r}: no ready revision among {sorted(self.policy.weights)}"
            )
        total = sum(weight for _, weight in weighted)
        point = (
            _stable_unit(self.deployment, session_key) if session_key else (rng or random).random()
        ) * total
        cumulative = 0.0
        for name, weight in weighted:
            cumulative += weight
            if point < cumulative:
                return name
        return weighted[-1][0]

    def shadow_for(self, primary: str, ready: Collection[str]) -> str | None:
        """The revision that mirrors this request, unless it is the one answering or not ready."""
        shadow = self.policy.shadow
        if shadow is None or shadow == primary or shadow not in ready:
            return None
        return shadow


def _stable_unit(deployment: str, session_key: str) -> float:
    """A uniform point in [0, 1) that depends only on the deployment and the session key."""
    digest = hashlib.blake2b(f"{deployment}\0{session_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
