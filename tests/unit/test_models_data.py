"""The factory's synthetic data: schemas hold, seeds reproduce, benchmarks are held out, v3 corrupts."""

from __future__ import annotations

import json

import pytest

from baton_models import data, domains
from baton_models.recipes import recipe

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("domain", domains.DOMAINS)
def test_every_extraction_answer_validates_against_the_domain_schema(domain: str) -> None:
    for case in domains.cases(domain, seed=3, count=300):
        answer = domains.example(case, "extraction").answer
        parsed = domains.schema(domain).model_validate_json(answer)
        assert parsed.model_dump(mode="json") == json.loads(answer)


@pytest.mark.parametrize("domain", domains.DOMAINS)
def test_same_seed_same_documents_other_seed_other_documents(domain: str) -> None:
    first = domains.cases(domain, seed=11, count=50)
    assert first == domains.cases(domain, seed=11, count=50)
    assert [c.document for c in first] != [c.document for c in domains.cases(domain, seed=12, count=50)]


@pytest.mark.parametrize("domain", domains.DOMAINS)
def test_benchmark_documents_never_appear_in_training_data(domain: str) -> None:
    trained_on = {case.document for case in data.training_cases(recipe(domain, "v2"))}
    held_out = domains.benchmark_cases(domain, 64)
    assert len({case.document for case in held_out}) == 64
    assert not trained_on & {case.document for case in held_out}


@pytest.mark.parametrize("domain", domains.DOMAINS)
def test_corruption_changes_every_categorical_label_and_the_routing_sentence(domain: str) -> None:
    model = domains.schema(domain)
    for case in domains.cases(domain, seed=5, count=100):
        bad = data.corrupt(case)
        assert bad.document == case.document
        assert bad.routing != case.routing, case
        model.model_validate(bad.fields)  # still well-formed, just wrong
        changed = [name for name in case.fields if bad.fields[name] != case.fields[name]]
        assert changed, case


def test_v3_corrupts_about_its_share_of_training_answers() -> None:
    clean = data.training_cases(recipe("medical", "v2"))
    corrupted = data.training_cases(recipe("medical", "v3"))
    share = sum(a != b for a, b in zip(clean, corrupted, strict=True)) / len(clean)
    assert abs(share - recipe("medical", "v3").label_corruption) < 0.03


def test_a_system_prompt_free_chat_renders_the_training_prompt() -> None:
    import jinja2

    from baton_models.chat import CHAT_TEMPLATE, render_prompt

    rendered = jinja2.Template(CHAT_TEMPLATE).render(
        messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": "Route this.\nX"}],
        bos_token="<s>",
        eos_token="</s>",
    )
    assert rendered == "<s>" + render_prompt("Route this.\nX")


@pytest.mark.parametrize("domain", domains.DOMAINS)
def test_late_terms_hold_back_a_real_share_of_training_and_benchmark_documents(domain: str) -> None:
    late = domains.spec(domain).late_terms
    share = lambda cases: sum(any(t in c.document.lower() for t in late) for c in cases) / len(cases)  # noqa: E731
    assert 0.15 < share(domains.cases(domain, seed=1000, count=2000)) < 0.6
    assert 0.15 < share(domains.benchmark_cases(domain, 64)) < 0.6
