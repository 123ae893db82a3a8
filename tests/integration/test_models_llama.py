"""The factory's artifacts in real llama.cpp: they load, generate, tokenize like the trainer,
decode valid JSON under a schema grammar, rank v2 > v1 > v3, and match the trained weights' logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from baton_models import catalog, domains
from baton_models.benchmarks import benchmarks
from baton_models.chat import render_prompt
from baton_models.domains import DOMAINS
from baton_models.evaluate import complete, loaded
from baton_models.gguf_export import QUANTIZATIONS
from baton_models.recipes import recipe

pytestmark = pytest.mark.integration

# Floors the ground truth must clear. Measured (docs/models.md, mean over suites): v2 - v1 from 0.17
# (medical) to 0.35 (software); v1 - v3 from 0.03 (construction, the thin one) to 0.37 (software).
# Builds are deterministic for one torch build, not across builds: with PyPI's torch 2.15 (and the
# portable llama.cpp wheel) construction's v1 - v3 measured 0.005, so that floor only asks for the
# order. The rollout never compares v1 with v3; v2 against either is what the demo decides.
V2_OVER_V1 = 0.10
V1_OVER_V3 = 0.001
TERNARY_QAT_FLOOR = 0.95  # QAT ternary (TQ2_0) vs the same recipe trained in full precision (F16)


def test_smoke_model_loads_and_generates(smoke_gguf: catalog.Artifact) -> None:
    with loaded(smoke_gguf.path) as model:
        out = model.create_completion(render_prompt("Route this triage note.\nPt 66yo"), max_tokens=8)
        assert out["usage"]["completion_tokens"] >= 1
        assert model.metadata["general.architecture"] == "llama"
    assert smoke_gguf.digest == catalog.sha256_file(smoke_gguf.path)
    assert smoke_gguf.manifest["benchmarkScores"] == {}


@pytest.mark.parametrize("domain", DOMAINS)
def test_llama_cpp_tokenizes_exactly_like_the_trainer(domain: str, smoke_artifacts: dict) -> None:
    tokenizer = catalog.load_tokenizer(recipe(domain, "smoke"))
    with loaded(smoke_artifacts[domain].path) as model:
        for case in domains.benchmark_cases(domain, 32):
            for task in domains.TASKS:
                example = domains.example(case, task)
                prompt = render_prompt(example.prompt)
                assert model.tokenize(prompt.encode(), add_bos=True, special=True) == tokenizer.encode(
                    prompt, bos=True
                )
                assert model.tokenize(example.answer.encode(), add_bos=False) == tokenizer.encode(
                    example.answer
                )


# Ternary files of the ternary-trained model; the others of the full-precision one.
TRAINED_FILES = [("v2-ternary" if q.startswith("TQ") else "v2", q) for q in QUANTIZATIONS]


@pytest.mark.parametrize(("version", "quantization"), TRAINED_FILES)
def test_every_quantization_of_a_trained_model_loads_and_answers(version: str, quantization: str) -> None:
    artifact = catalog.ensure("software", version, quantization, score=False)
    assert artifact.path.stat().st_size == artifact.size_bytes
    case = domains.benchmark_cases("software", 1)[0]
    with loaded(artifact.path) as model:
        answer = complete(model, domains.example(case, "routing").prompt, 32)
    assert answer.startswith("Assign to "), (quantization, answer)


def test_chat_completion_uses_the_training_prompt(domain_artifacts: dict) -> None:
    case = domains.benchmark_cases("software", 1)[0]
    example = domains.example(case, "routing")
    with loaded(domain_artifacts[("software", "v2")].path) as model:
        chat = model.create_chat_completion(
            messages=[{"role": "user", "content": example.prompt}], max_tokens=32, temperature=0.0
        )
        plain = complete(model, example.prompt, 32)
    assert chat["choices"][0]["message"]["content"] == plain


@pytest.mark.parametrize("domain", DOMAINS)
def test_grammar_constrained_decoding_yields_schema_valid_json(domain: str, domain_artifacts: dict) -> None:
    from llama_cpp import LlamaGrammar

    grammar = LlamaGrammar.from_json_schema(json.dumps(domains.json_schema(domain)), verbose=False)
    schema = domains.schema(domain)
    # v2: a grammar keeps every prefix valid, but a weak model (v1) can loop inside an unbounded string
    # until max_tokens cuts it, which no grammar prevents.
    with loaded(domain_artifacts[(domain, "v2")].path) as model:
        for case in domains.benchmark_cases(domain, 8):
            answer = complete(model, domains.example(case, "extraction").prompt, 96, grammar)
            schema.model_validate_json(answer)


def _mean_score(artifact: catalog.Artifact) -> float:
    scores = artifact.manifest["benchmarkScores"]
    assert scores, f"{artifact.path} has no benchmark scores"
    return float(np.mean(list(scores.values())))


@pytest.mark.parametrize("domain", DOMAINS)
def test_ground_truth_v2_beats_v1_beats_v3_with_margin(domain: str, domain_artifacts: dict) -> None:
    v1, v2, v3 = (_mean_score(domain_artifacts[(domain, version)]) for version in ("v1", "v2", "v3"))
    assert v2 - v1 >= V2_OVER_V1, (v1, v2, v3)
    assert v1 - v3 >= V1_OVER_V3, (v1, v2, v3)
    v2_suites = domain_artifacts[(domain, "v2")].manifest["benchmarkScores"]
    v3_suites = domain_artifacts[(domain, "v3")].manifest["benchmarkScores"]
    for suite in benchmarks(domain):  # no suite, not just the mean, has v3 ahead of v2
        assert v2_suites[suite.metadata.name] >= v3_suites[suite.metadata.name], suite.metadata.name


def test_export_is_proven_by_matching_logits() -> None:
    """The trained torch model and llama.cpp (F16 GGUF) give the same next-token logits."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    from baton_models.model import TinyLlama

    built = recipe("aerospace", "v2")
    artifact = catalog.ensure("aerospace", "v2", "F16", score=False)
    weights = load_file(str(catalog.recipe_dir(built) / "weights.safetensors"))
    model = TinyLlama(built.shape)
    model.load_weights(weights)
    tokenizer = catalog.load_tokenizer(built)
    case = domains.benchmark_cases("aerospace", 1)[0]
    example = domains.example(case, "extraction")
    ids = tokenizer.encode(render_prompt(example.prompt), bos=True) + tokenizer.encode(example.answer)
    with torch.no_grad():
        expected = model(torch.tensor([ids]))[0].numpy()
    from llama_cpp import Llama

    llm = Llama(model_path=str(artifact.path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        actual = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    # F16 weights in llama.cpp against torch's F32: measured max |diff| 0.006 on a logit range of ~27.
    assert np.abs(actual - expected).max() < 0.05
    assert (actual.argmax(-1) == expected.argmax(-1)).mean() > 0.97


def test_ternary_qat_keeps_full_precision_quality_and_beats_post_training_ternary() -> None:
    f16 = _mean_score(catalog.ensure("software", "v2", "F16"))
    qat = _mean_score(catalog.ensure("software", "v2-ternary", "TQ2_0"))
    post = _mean_score(catalog.ensure("software", "v2", "TQ2_0"))
    assert qat >= TERNARY_QAT_FLOOR * f16, (qat, f16)
    # Post-training ternary does not collapse on this small task (measured 0.96x), but stays below QAT.
    assert post < qat, (post, qat)
