"""llama-server's own timings become the unary answer's decoding time after its first token."""

import pytest

from baton_serving.engines import DECODE_AFTER_FIRST_TOKEN_KEY
from baton_serving.engines.llamacpp import _openai_shaped, _with_decode_time

pytestmark = pytest.mark.unit

ANSWER = {"id": "x", "object": "chat.completion", "choices": [], "usage": {"completion_tokens": 5}}


def test_predicted_ms_is_the_time_after_the_first_token_in_seconds():
    body = ANSWER | {"timings": {"prompt_ms": 3.0, "predicted_n": 5, "predicted_ms": 40.0}}
    shaped = _with_decode_time(_openai_shaped(body), body)
    assert shaped[DECODE_AFTER_FIRST_TOKEN_KEY] == pytest.approx(0.040)
    assert "timings" not in shaped  # llama-server's own keys never reach a client


@pytest.mark.parametrize(
    "timings",
    [None, {"predicted_n": 0, "predicted_ms": 0.0}, {"predicted_n": 3}, "not a mapping"],
    ids=["absent", "no token", "no time", "malformed"],
)
def test_without_a_generated_token_or_its_time_nothing_is_claimed(timings):
    body = ANSWER if timings is None else ANSWER | {"timings": timings}
    assert DECODE_AFTER_FIRST_TOKEN_KEY not in _with_decode_time(_openai_shaped(body), body)
