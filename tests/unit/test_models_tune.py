"""A team's dataset is refused line by line, naming the field and never echoing the content."""

from __future__ import annotations

import json

import pytest

from baton_models import data
from baton_models.gguf_export import QUANTIZATIONS
from baton_models.tune import MAX_LINE_BYTES, TuneError, TuneJob, parse_dataset

pytestmark = pytest.mark.unit
SECRET = "PATIENT-NAME-7f3a"  # content no error message may echo


def line(*messages: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": role, "content": content} for role, content in messages]})


GOOD = line(("user", f"Route this note. {SECRET}"), ("assistant", "Routine."))


def refusal(text: str) -> str:
    with pytest.raises(TuneError) as raised:
        parse_dataset(text.encode())
    message = str(raised.value)
    assert SECRET not in message
    return message


def test_a_chat_line_becomes_the_prompt_the_models_are_trained_on() -> None:
    system = line(("system", "Be brief."), ("user", "Route this note."), ("assistant", "Routine."))
    assert parse_dataset(f"{GOOD}\n\n{system}\n".encode()) == [
        (f"### Route this note. {SECRET}\n### Answer:\n", "Routine."),
        ("### Route this note.\n### Answer:\n", "Routine."),
    ]


def test_the_shipped_domain_dataset_parses_whole() -> None:
    assert len(parse_dataset(data.chat_jsonl("medical", 20).encode())) == 40


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (f'{{"messages": [{{"role": "user", "content": "{SECRET}"', "line 2: not JSON"),
        (line(("user", SECRET), ("assistant", "")), "line 2: messages[1].content"),
        (line(("user", SECRET), ("bot", "x")), "line 2: messages[1].role"),
        (json.dumps({"messages": [{"role": "user", "content": SECRET}], "extra": 1}), "line 2: messages"),
        (json.dumps({"prompt": SECRET}), "line 2: messages"),
        (line(("assistant", SECRET), ("user", "x")), "line 2: messages: expected a user message then"),
        (
            json.dumps({"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "x"}]}),
            "line 2: messages[0].content",
        ),
        ("[" + SECRET * (MAX_LINE_BYTES // len(SECRET)) + "]", f"line 2: longer than {MAX_LINE_BYTES} bytes"),
    ],
)
def test_a_bad_line_is_named_with_its_field(bad: str, named: str) -> None:
    assert named in refusal(f"{GOOD}\n{bad}\n{GOOD}\n")


def test_many_bad_lines_are_counted_not_all_listed() -> None:
    message = refusal("\n".join(["{"] * 12))
    assert "line 5:" in message and "line 6:" not in message and "and 7 more bad lines" in message


@pytest.mark.parametrize("empty", ["", "\n\n  \n"])
def test_an_empty_dataset_is_refused(empty: str) -> None:
    assert refusal(empty) == "dataset: no examples"


def test_a_dataset_that_is_not_text_is_refused() -> None:
    with pytest.raises(TuneError, match="not UTF-8"):
        parse_dataset(b"\xff\xfe")


def test_the_recipe_hash_covers_what_determines_the_weights_and_not_where_files_lie(tmp_path) -> None:
    job = TuneJob(
        name="m",
        base=tmp_path / "a",
        base_digest="sha256:" + "a" * 64,
        dataset=tmp_path / "d",
        dataset_digest="sha256:" + "b" * 64,
        steps=5,
        batch_size=2,
        learning_rate=1e-3,
        warmup=1,
        seed=0,
        quantizations=("Q8_0",),
    )
    assert job.recipe_hash == job.model_copy(update={"base": tmp_path / "b", "name": "n"}).recipe_hash
    for change in ({"seed": 1}, {"steps": 6}, {"dataset_digest": "sha256:" + "c" * 64}):
        assert job.model_copy(update=change).recipe_hash != job.recipe_hash


def test_the_api_offers_exactly_the_quantizations_the_factory_writes() -> None:
    from baton.api.tuning import TUNED_QUANTIZATIONS

    assert TUNED_QUANTIZATIONS == QUANTIZATIONS
