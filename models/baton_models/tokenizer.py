"""A small BPE tokenizer that each recipe trains itself, laid out so llama.cpp tokenizes identically.

The vocabulary is written into the GGUF as a SentencePiece-style ("llama") vocabulary: `<unk>`,
`<s>`, `</s>`, 256 byte-fallback tokens, the base characters, then the learned merges with
descending scores. `encode` re-implements llama.cpp's SPM algorithm (spaces become "▁", then
adjacent symbols are merged greedily by the score of the merged piece, leftmost first on ties,
and anything not in the vocabulary falls back to bytes), so the ids a model is trained on are
the ids llama.cpp feeds it. A test compares both on the benchmark prompts.

Merges never cross a word boundary (a piece holds "▁" only as its first character) and never
touch digits, so numbers are copied digit by digit. That also lets `encode` work word by word.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

SPACE = "\u2581"  # SentencePiece's visible space
UNK, BOS, EOS = 0, 1, 2
SPECIAL_PIECES = ("<unk>", "<s>", "</s>")
BYTE_OFFSET = len(SPECIAL_PIECES)

# gguf token types (llama_token_type)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_BYTE = 1, 2, 3, 6


def _words(text: str) -> list[str]:
    """Split escaped text before every "▁", the only places where no merge can cross."""
    escaped = text.replace(" ", SPACE)
    words, start = [], 0
    for index in range(1, len(escaped)):
        if escaped[index] == SPACE:
            words.append(escaped[start:index])
            start = index
    if escaped:
        words.append(escaped[start:])
    return words


def _mergeable(left: str, right: str) -> bool:
    return SPACE not in right and not any(ch.isdigit() for ch in left + right)


@dataclass(frozen=True)
class Tokenizer:
    """Pieces with scores; ids are positions. Build one with `train`."""

    pieces: tuple[str, ...]
    scores: tuple[float, ...]
    token_types: tuple[int, ...]
    _word_cache: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def ids(self) -> dict[str, int]:
        return {
            piece: index for index, piece in enumerate(self.pieces) if self.token_types[index] == TOKEN_NORMAL
        }

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    @cached_property
    def digest(self) -> str:
        payload = json.dumps([self.pieces, self.scores, self.token_types]).encode()
        return hashlib.sha256(payload).hexdigest()

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        out = [BOS] if bos else []
        for word in _words(text):
            cached = self._word_cache.get(word)
            if cached is None:
                cached = self._word_cache[word] = tuple(self._encode_word(word))
            out.extend(cached)
        if eos:
            out.append(EOS)
        return out

    def _encode_word(self, word: str) -> list[int]:
        # llama.cpp llm_tokenizer_spm: symbols in a linked list, a max-heap of adjacent pairs keyed by
        # (score of the merged piece, leftmost first); stale pairs are skipped when popped.
        symbols = list(word)
        prev = list(range(-1, len(symbols) - 1))
        nxt = list(range(1, len(symbols) + 1))
        nxt[-1] = -1
        heap: list[tuple[float, int, str]] = []

        def push(left: int) -> None:
            right = nxt[left]
            if left == -1 or right == -1:
                return
            merged = symbols[left] + symbols[right]
            index = self.ids.get(merged)
            if index is not None:
                heapq.heappush(heap, (-self.scores[index], left, merged))

        for index in range(len(symbols) - 1):
            push(index)
        while heap:
            _, left, merged = heapq.heappop(heap)
            right = nxt[left]
            if right == -1 or symbols[left] + symbols[right] != merged:
                continue
            symbols[left] = merged
            symbols[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] != -1:
                prev[nxt[right]] = left
            push(prev[left])
            push(left)
        out: list[int] = []
        index = 0
        while index != -1:
            piece = symbols[index]
            if piece in self.ids:
                out.append(self.ids[piece])
            else:
                out.extend(BYTE_OFFSET + byte for byte in piece.encode("utf-8"))
            index = nxt[index]
        return out

    def decode(self, ids: Iterable[int]) -> str:
        data = bytearray()
        for index in ids:
            kind = self.token_types[index]
            if kind == TOKEN_BYTE:
                data.append(index - BYTE_OFFSET)
            elif kind == TOKEN_NORMAL:
                data.extend(self.pieces[index].replace(SPACE, " ").encode("utf-8"))
        return data.decode("utf-8", errors="replace")


def train(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Learn BPE merges over the words of `texts` until the vocabulary has `vocab_size` pieces.

    Deterministic: ties between equally frequent pairs go to the lexicographically smallest.
    """
    word_counts: Counter[str] = Counter()
    for text in texts:
        word_counts.update(_words(text))
    alphabet = sorted({ch for word in word_counts for ch in word})
    pieces = list(SPECIAL_PIECES) + [f"<0x{byte:02X}>" for byte in range(256)] + alphabet
    types = (
        [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL] + [TOKEN_BYTE] * 256 + [TOKEN_NORMAL] * len(alphabet)
    )
    if vocab_size < len(pieces):
        raise ValueError(f"vocab_size {vocab_size} is below the {len(pieces)} base pieces")
    words = [(list(word), count) for word, count in sorted(word_counts.items())]
    known = set(pieces)
    merges: list[str] = []
    while len(pieces) + len(merges) < vocab_size:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words:
            for left, right in itertools.pairwise(symbols):
                if _mergeable(left, right):
                    pairs[(left, right)] += count
        candidates = [(count, pair) for pair, count in pairs.items() if "".join(pair) not in known]
        if not candidates:
            break
        best_count = max(count for count, _ in candidates)
        left, right = min(pair for count, pair in candidates if count == best_count)
        merged = left + right
        merges.append(merged)
        known.add(merged)
        for symbols, _ in words:
            index = 0
            while index < len(symbols) - 1:
                if symbols[index] == left and symbols[index + 1] == right:
                    symbols[index : index + 2] = [merged]
                index += 1
    # Base characters score below every merge; earlier merges score higher, as in SentencePiece BPE.
    scores = (
        [0.0] * (BYTE_OFFSET + 256) + [-1e6] * len(alphabet) + [-float(rank) for rank in range(len(merges))]
    )
    return Tokenizer(tuple(pieces + merges), tuple(scores), tuple(types + [TOKEN_NORMAL] * len(merges)))
