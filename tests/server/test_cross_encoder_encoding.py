"""Cross-encoder pair encoding with the real MiniLM tokenizer: a pair's tokens never depend on
its batch-mates."""

from __future__ import annotations

import pytest
from reranker_server.cross_encoder import CrossEncoder
from reranker_server.scoring import GroupKey
from reranker_server.settings import Settings
from tiny_models import MINILM_DIR

MEDIUM_QUERY = "what is the capital city of france and how many people lived there in the year 1900"
DOC = " ".join(["paris has been the capital of france for many centuries"] * 3)
LONG_QUERY = " ".join(["question"] * 100)


@pytest.fixture(scope="module")
def encoder() -> CrossEncoder:
    from transformers import AutoTokenizer

    return CrossEncoder(Settings(), AutoTokenizer.from_pretrained(MINILM_DIR))


def test_a_long_query_batch_mate_changes_no_other_pairs_tokens(encoder):
    key = GroupKey(None, 32)
    alone = encoder.encode(key, [(MEDIUM_QUERY, DOC)])
    mixed = encoder.encode(key, [(MEDIUM_QUERY, DOC), (LONG_QUERY, "short"), ("q", DOC)])
    assert mixed.prompts[0] == alone.prompts[0]
    assert mixed.segment_starts[0] == alone.segment_starts[0]
    assert mixed.cut_pairs[0] == alone.cut_pairs[0]
    assert mixed.prompts[2] == encoder.encode(key, [("q", DOC)]).prompts[0]
    # The query kept whole and the document cut (only_second), as when scored alone.
    n_query = len(encoder.tokenizer(MEDIUM_QUERY, add_special_tokens=False)["input_ids"])
    assert alone.segment_starts[0] == n_query + 2 and len(alone.prompts[0]) == 32


def test_a_query_longer_than_max_length_is_cut_on_its_own(encoder):
    key = GroupKey(None, 32)
    mixed = encoder.encode(key, [(LONG_QUERY, "short"), (MEDIUM_QUERY, DOC)])
    assert len(mixed.prompts[0]) == 32
    assert mixed.prompts[0] == encoder.encode(key, [(LONG_QUERY, "short")]).prompts[0]
    query_cut, doc_cut = mixed.cut_pairs[0]
    assert LONG_QUERY.startswith(query_cut) and len(query_cut) < len(LONG_QUERY)
    assert doc_cut == "short"
