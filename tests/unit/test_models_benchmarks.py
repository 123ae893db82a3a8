"""Generated Benchmark resources: current, valid baton resources, and an oracle answer scores 1.0."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from baton.analysis.scorers import compile_scorer
from baton.api import Benchmark, parse_resource
from baton_models.benchmarks import BENCHMARK_ITEMS, benchmarks, write_manifests
from baton_models.domains import DOMAINS

pytestmark = pytest.mark.unit

COMMITTED = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "benchmarks"


def test_committed_manifests_are_what_the_generator_writes(tmp_path: Path) -> None:
    for written in write_manifests(tmp_path):
        committed = COMMITTED / written.name
        assert committed.read_text() == written.read_text(), (
            f"regenerate: python -m baton_models benchmarks ({committed})"
        )


@pytest.mark.parametrize("domain", DOMAINS)
def test_manifests_parse_as_baton_benchmarks(domain: str) -> None:
    documents = list(yaml.safe_load_all((COMMITTED / f"{domain}.yaml").read_text()))
    names = set()
    for document in documents:
        resource = parse_resource(document)
        assert isinstance(resource, Benchmark)
        assert resource.spec.domain == domain
        assert len(resource.spec.inline or []) == BENCHMARK_ITEMS
        names.add(resource.metadata.name)
    assert {f"{domain}-extraction", f"{domain}-routing"} <= names


@pytest.mark.parametrize("domain", DOMAINS)
def test_an_oracle_scores_one_and_a_wrong_answer_less(domain: str) -> None:
    for suite in benchmarks(domain, 16):
        scorer = compile_scorer(suite.spec.scorer)
        items = suite.spec.inline or []
        assert all(scorer(item.expected, item.expected) == 1.0 for item in items), suite.metadata.name
        if suite.spec.scorer.type in ("jsonSchema", "regex"):  # format checks: any well-formed answer passes
            assert scorer(items[0].expected, "not the format") == 0.0
        else:
            assert scorer(items[0].expected, items[1].expected) < 1.0


def test_every_scorer_type_is_exercised() -> None:
    types = {suite.spec.scorer.type for domain in DOMAINS for suite in benchmarks(domain, 4)}
    assert types == {"exact", "regex", "numeric", "jsonSchema", "fieldMatch"}
