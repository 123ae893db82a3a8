"""The recipe-trained tokenizer: deterministic, lossless, and shaped so llama.cpp splits text the same way."""

from __future__ import annotations

import pytest

from baton_models.tokenizer import BOS, EOS, SPACE, TOKEN_NORMAL, train

pytestmark = pytest.mark.unit

CORPUS = [
    "Pt 66yo female, c/o sore throat.",
    "Extract the triage fields as JSON.\nWalk-in: male aged 55 presenting with abdominal pain.",
    '{"urgency": "urgent", "symptoms": ["abdominal pain"], "age": 55}',
] * 20


def test_training_is_deterministic() -> None:
    assert train(CORPUS, 400).digest == train(CORPUS, 400).digest


def test_encode_decode_round_trips_including_unseen_characters() -> None:
    tokenizer = train(CORPUS, 400)
    for text in [*CORPUS[:3], "naïve résumé → 42 ✓", "  two  spaces\n\nand tabs\t"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_bos_eos_and_merges_shorten_text() -> None:
    tokenizer = train(CORPUS, 400)
    ids = tokenizer.encode(CORPUS[1], bos=True, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS
    assert len(ids) < len(CORPUS[1]) / 2


def test_pieces_never_span_words_or_hold_digits_with_other_characters() -> None:
    tokenizer = train(CORPUS, 400)
    for piece, kind in zip(tokenizer.pieces, tokenizer.token_types, strict=True):
        if kind != TOKEN_NORMAL or len(piece) == 1:
            continue
        assert SPACE not in piece[1:], piece
        assert not any(ch.isdigit() for ch in piece), piece


def test_vocab_size_is_exact_and_too_small_is_refused() -> None:
    assert train(CORPUS, 400).vocab_size == 400
    with pytest.raises(ValueError, match="base pieces"):
        train(CORPUS, 100)
