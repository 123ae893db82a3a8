"""A team's dataset is refused line by line, naming the field and never echoing the content."""

from __future__ import annotations

import json

import pytest

from baton_models import data
from baton_models.gguf_export import QUANTIZATIONS
from baton_models.lora import TARGETS
from baton_models.shape import Shape
from baton_models.tune import MAX_LINE_BYTES, LoraJob, TuneError, TuneJob, parse_dataset

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


def tune_job(tmp_path, **fields) -> TuneJob:
    defaults = {"steps": 1, "batch_size": 1, "learning_rate": 1e-3, "warmup": 0, "seed": 0}
    return TuneJob(
        name="m",
        base=tmp_path / "a",
        base_digest="sha256:" + "a" * 64,
        dataset=tmp_path / "d",
        dataset_digest="sha256:" + "b" * 64,
        **defaults | fields,
    )


def test_the_recipe_hash_covers_what_determines_the_weights_and_not_where_files_lie(tmp_path) -> None:
    job = tune_job(tmp_path, steps=5, batch_size=2, warmup=1, quantizations=("Q8_0",))
    assert job.recipe_hash == job.model_copy(update={"base": tmp_path / "b", "name": "n"}).recipe_hash
    for change in ({"seed": 1}, {"steps": 6}, {"dataset_digest": "sha256:" + "c" * 64}):
        assert job.model_copy(update=change).recipe_hash != job.recipe_hash


def test_the_api_offers_exactly_the_quantizations_the_factory_writes() -> None:
    from baton.api.tuning import TUNED_QUANTIZATIONS

    assert TUNED_QUANTIZATIONS == QUANTIZATIONS


SHAPE = Shape(vocab=260, hidden=256, layers=1, heads=4, kv_heads=2, ffn=256, context=32)


def lora_job(tmp_path, rank: int) -> TuneJob:
    return tune_job(tmp_path, lora=LoraJob(rank=rank, alpha=16, targets=TARGETS))


def test_an_adapter_starts_as_the_base_and_trains_only_its_own_matrices() -> None:
    torch = pytest.importorskip("torch")
    from baton_models.lora import attach
    from baton_models.model import TinyLlama

    torch.manual_seed(0)
    model = TinyLlama(SHAPE)
    tokens = torch.randint(0, SHAPE.vocab, (1, 8))
    before = model(tokens)
    adapters = attach(model, ("attn_q", "ffn_down"), rank=4, alpha=8, seed=0)
    assert torch.equal(model(tokens), before)  # B = 0: the tuned model starts as the base
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.0.{t}.lora_{m}" for t in ("attn_q", "ffn_down") for m in "ab"}
    assert set(adapters) == {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"}


def test_the_adapter_file_has_the_layout_llama_cpp_reads(tmp_path) -> None:
    pytest.importorskip("torch")
    import gguf

    from baton_models.lora import adapter_tensors, attach, write_adapter
    from baton_models.model import TinyLlama

    model = TinyLlama(SHAPE)
    adapters = attach(model, ("attn_k", "ffn_down"), rank=4, alpha=8, seed=0)
    write_adapter(tmp_path / "a.gguf", "m", adapter_tensors(adapters), alpha=8)
    reader = gguf.GGUFReader(str(tmp_path / "a.gguf"))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    # ggml order (ne0 first): lora_a is [in, rank] beside the base's [in, out]; lora_b is [rank, out].
    shapes = {tensor.name: tensor.shape.tolist() for tensor in reader.tensors}
    assert shapes == {
        "blk.0.attn_k.weight.lora_a": [256, 4],
        "blk.0.attn_k.weight.lora_b": [4, 128],
        "blk.0.ffn_down.weight.lora_a": [256, 4],
        "blk.0.ffn_down.weight.lora_b": [4, 256],
    }


def test_a_rank_the_base_cannot_take_fails_naming_the_field(tmp_path) -> None:
    pytest.importorskip("torch")
    from baton_models.model import TinyLlama
    from baton_models.tune import Base, fine_tune

    base = Base(SHAPE, None, TinyLlama(SHAPE).export())  # the check comes before any tokenizing
    with pytest.raises(
        TuneError, match=r"^spec.lora.rank: 129 is larger than the base allows \(128: blk.0.attn_k"
    ):
        fine_tune(lora_job(tmp_path, 129), base, [], lambda step, loss: None)


def test_a_lora_run_hashes_its_settings_but_not_where_its_base_was_found(tmp_path) -> None:
    job = lora_job(tmp_path, 8)
    for change in ({"rank": 4}, {"alpha": 32.0}, {"targets": ("attn_q",)}):
        other = job.model_copy(update={"lora": job.lora.model_copy(update=change)})
        assert other.recipe_hash != job.recipe_hash
    echoed = job.model_copy(update={"base_uri": "/elsewhere", "base_quantization": "F16"})
    assert echoed.recipe_hash == job.recipe_hash
