"""The cross-encoder family: sequence classification with one label, score = sigmoid(logit).

Tokenisation happens here, not in vLLM, so that truncation is exact and identical for every
backend: a pair is cut to ``max_length`` tokens by shortening the document first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .model_family import ClassifierFamily, ClassifyInput, ModelFamily
from .scoring import GroupKey, Pair
from .settings import Settings


class CrossEncoder(ClassifierFamily):
    """A BERT-style (or any one-label) classifier over the pair ``[CLS] q [SEP] d [SEP]``."""

    kind = ModelFamily.CROSS_ENCODER
    prompt_version = "ce-1"
    score_range = "sigmoid(logit) in [0, 1]; raw_score is the logit"
    default_instruction: ClassVar[str | None] = None

    def __init__(self, settings: Settings, tokenizer: Any) -> None:
        super().__init__(settings, tokenizer)
        self.min_length = 4  # [CLS] q [SEP] d [SEP] with a token of each

    @classmethod
    def instruction_of(cls, requested: str | None) -> str | None:
        # A cross-encoder has no instruction input: do not split groups (or cache keys) on it.
        return None

    def _encode(self, key: GroupKey, pairs: Sequence[Pair]) -> ClassifyInput:
        # Without padding, a pair's tokens from a batch call are its tokens alone; only the
        # truncation fallback must be decided pair by pair, or one long query would re-cut
        # every batch-mate (and its score would depend on its batch).
        try:
            encoded = [self._call(pairs, "only_second", key.max_length)]
        except Exception:  # noqa: BLE001 - the tokenizer's "cannot truncate" is a bare Exception
            encoded = [self._one_pair(pair, key.max_length) for pair in pairs]
        rows = [(enc, i) for enc in encoded for i in range(len(enc["input_ids"]))]
        out = ClassifyInput(prompts=[list(enc["input_ids"][i]) for enc, i in rows])
        if "token_type_ids" in encoded[0]:
            out.segment_starts = [_first_one(enc["token_type_ids"][i]) for enc, i in rows]
            out.cut_pairs = [
                _cut_pair(pair, enc.sequence_ids(i), enc["offset_mapping"][i])
                for pair, (enc, i) in zip(pairs, rows, strict=True)
            ]
        return out

    def _call(self, pairs: Sequence[Pair], truncation: str, max_length: int) -> Any:
        return self.tokenizer(
            [q for q, _ in pairs],
            [d for _, d in pairs],
            truncation=truncation,
            max_length=max_length,
            return_offsets_mapping=True,
        )

    def _one_pair(self, pair: Pair, max_length: int) -> Any:
        """One pair alone: the document is cut first; a query longer than max_length on its
        own is cut too (longest first), which changes no other pair."""
        try:
            return self._call([pair], "only_second", max_length)
        except Exception:  # noqa: BLE001
            return self._call([pair], "longest_first", max_length)


def _first_one(token_types: Sequence[int]) -> int:
    """Where the second segment starts (vLLM's compressed form of token type ids)."""
    for i, t in enumerate(token_types):
        if t == 1:
            return i
    return len(token_types)


def _cut_pair(pair: Pair, sequence_ids: list[int | None], offsets: list[tuple[int, int]]) -> Pair:
    """The pair's texts cut at the end of the last token each kept, so that an engine which
    tokenises text itself sees (nearly always exactly) the same tokens without truncating."""
    ends = {0: 0, 1: 0}
    for seq, (_, end) in zip(sequence_ids, offsets):
        if seq is not None:
            ends[seq] = max(ends[seq], end)
    return pair[0][: ends[0]], pair[1][: ends[1]]
