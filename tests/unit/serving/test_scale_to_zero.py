"""The pure parts of scale to zero: when an idle replica unloads, how often it looks, and how the
ingress sums the replicas' scale events."""

from __future__ import annotations

import pytest

from baton_serving.metrics import ScaleEventTally
from baton_serving.scale_to_zero import MAX_CHECK_INTERVAL_S, check_interval, idle_expired

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("after_s", "in_flight", "idle_since", "now", "expired"),
    [
        (None, 0, 0.0, 1e9, False),  # off: never, however long idle
        (10.0, 0, 100.0, 109.9, False),  # not idle long enough
        (10.0, 0, 100.0, 110.0, True),  # exactly `after` without a request
        (10.0, 1, 0.0, 1e9, False),  # a request in flight (a long stream) keeps it loaded
        (10.0, 3, 100.0, 200.0, False),
    ],
)
def test_a_replica_unloads_only_when_on_idle_and_long_enough(after_s, in_flight, idle_since, now, expired):
    assert idle_expired(after_s, in_flight, idle_since, now) is expired


def test_the_watcher_looks_at_least_four_times_per_idle_period_and_at_most_every_second():
    assert check_interval(None) == MAX_CHECK_INTERVAL_S
    assert check_interval(2.0) == 0.5
    assert check_interval(600.0) == MAX_CHECK_INTERVAL_S


def test_scale_events_are_summed_over_replicas_and_never_fall():
    tally = ScaleEventTally()
    assert tally.add({"replica_id": "a", "scale_events": {"unload": 1, "load": 0}}) == {
        "unload": 1,
        "load": 0,
    }
    # The probe reaches another replica: its counts add, the first one's stay.
    assert tally.add({"replica_id": "b", "scale_events": {"unload": 2, "load": 2}}) == {
        "unload": 3,
        "load": 2,
    }
    # The same replica again: its newer counts replace its older ones, not add to them.
    assert tally.add({"replica_id": "a", "scale_events": {"unload": 2, "load": 1}}) == {
        "unload": 4,
        "load": 3,
    }
    # A replica that refused its artifact has no counts: nothing changes.
    assert tally.add({"replica_id": "c", "ready": False}) == {"unload": 4, "load": 3}
