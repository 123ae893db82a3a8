"""The router's split follows the weights, sessions stick, and unready revisions get no traffic."""

import random

import pytest

from baton_serving.config import RoutePolicy
from baton_serving.router import NoServableRevisionError, Router

pytestmark = pytest.mark.unit


def router(weights: dict, shadow: str | None = None) -> Router:
    return Router("medical", RoutePolicy(weights=weights, shadow=shadow))


def test_split_without_session_follows_weights():
    rng = random.Random(7)
    picks = [router({"v1": 80, "v2": 20}).choose({"v1", "v2"}, rng=rng) for _ in range(10_000)]
    share = picks.count("v2") / len(picks)
    assert abs(share - 0.2) < 4 * (0.2 * 0.8 / len(picks)) ** 0.5


def test_sessions_stick_and_split_by_weight():
    route = router({"v1": 80, "v2": 20})
    first = {f"s{i}": route.choose({"v1", "v2"}, session_key=f"s{i}") for i in range(2_000)}
    again = {key: route.choose({"v1", "v2"}, session_key=key) for key in first}
    assert first == again
    share = list(first.values()).count("v2") / len(first)
    assert 0.16 < share < 0.24


def test_raising_a_candidate_weight_only_moves_sessions_onto_it():
    low = router({"v2": 10, "v1": 90})
    high = router({"v2": 50, "v1": 50})
    for index in range(1_000):
        key = f"user-{index}"
        if low.choose({"v1", "v2"}, session_key=key) == "v2":
            assert high.choose({"v1", "v2"}, session_key=key) == "v2"


def test_weight_of_unready_revisions_falls_to_ready_ones():
    route = router({"v1": 50, "v2": 50})
    assert {route.choose({"v1"}, rng=random.Random(seed)) for seed in range(50)} == {"v1"}
    with pytest.raises(NoServableRevisionError, match="medical"):
        route.choose(set())


def test_shadow_only_when_ready_and_not_the_answerer():
    route = router({"v1": 100}, shadow="v2")
    assert route.shadow_for("v1", {"v1", "v2"}) == "v2"
    assert route.shadow_for("v1", {"v1"}) is None
    assert route.shadow_for("v2", {"v1", "v2"}) is None
