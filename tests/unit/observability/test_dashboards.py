"""The generated Grafana dashboards: structure, the panels an SRE needs, and only metrics that exist."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from baton.observability import alerts, catalog, dashboards

pytestmark = pytest.mark.unit

METRIC = re.compile(r"\bbaton_[a-z0-9_]+")


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found = [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]
    found += [
        annotation["expr"] for annotation in dashboard["annotations"].get("list", []) if "expr" in annotation
    ]
    found += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in dashboards.render_all().items()}


def test_two_dashboards_with_stable_uids(rendered: dict[str, dict[str, Any]]) -> None:
    assert {doc["uid"] for doc in rendered.values()} == {"baton-overview", "baton-rollout"}
    assert all("baton" in doc["tags"] for doc in rendered.values())


def test_every_panel_queries_the_selected_prometheus(rendered: dict[str, dict[str, Any]]) -> None:
    for doc in rendered.values():
        for panel in panels(doc):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert ref_ids and all(ref_ids) and len(set(ref_ids)) == len(ref_ids), panel["title"]
            assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_panels_do_not_overlap(rendered: dict[str, dict[str, Any]]) -> None:
    for doc in rendered.values():
        cells: set[tuple[int, int]] = set()
        for panel in doc["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            mine = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & mine, f"{panel['title']} overlaps another panel"
            cells |= mine


def test_rollout_view_shows_weight_latency_errors_scores_and_decisions(
    rendered: dict[str, dict[str, Any]],
) -> None:
    rollout = rendered["rollout.json"]
    by_title = {panel["title"]: panel for panel in panels(rollout)}
    assert "baton_rollout_canary_weight" in by_title["Candidate traffic weight"]["targets"][0]["expr"]
    for title in (
        "Time to first token by revision",
        "Time per output token by revision",
        "Error ratio by revision",
    ):
        assert all(
            "by (le, revision)" in t["expr"] or "by (revision)" in t["expr"]
            for t in by_title[title]["targets"]
        )
    assert "baton_benchmark_score" in by_title["Benchmark scores"]["targets"][0]["expr"]
    (decisions,) = rollout["annotations"]["list"]
    assert decisions["name"] == "Decisions" and "baton_rollout_decisions_total" in decisions["expr"]
    assert [v["name"] for v in rollout["templating"]["list"]] == ["datasource", "deployment"]


def referenced_metrics(rendered: dict[str, dict[str, Any]]) -> set[str]:
    found = {name for doc in rendered.values() for expr in expressions(doc) for name in METRIC.findall(expr)}
    rules = [rule["expr"] for group in alerts.rule_groups()["groups"] for rule in group["rules"]]
    return found | {name for expr in rules for name in METRIC.findall(expr)}


def test_dashboards_and_alerts_name_only_metrics_baton_defines(rendered: dict[str, dict[str, Any]]) -> None:
    referenced = referenced_metrics(rendered)
    assert {"baton_requests_total", "baton_rollout_canary_weight"} <= referenced
    assert referenced <= catalog.sample_names(), (
        f"not defined by baton: {sorted(referenced - catalog.sample_names())}"
    )


def test_dashboards_parse_back_through_grafanas_schema_types(rendered: dict[str, dict[str, Any]]) -> None:
    """The SDK's Dashboard model (generated from Grafana's schema) reads every field we wrote back."""
    for original in rendered.values():
        doc = copy.deepcopy(original)
        parsed = json.loads(json.dumps(Dashboard.from_json(doc), cls=JSONEncoder))
        for annotation in doc["annotations"].get("list", []):
            # Grafana's Prometheus annotation options that the schema's AnnotationQuery does not model.
            for key in ("titleFormat", "tagKeys", "step"):
                annotation.pop(key, None)
        assert parsed == doc
