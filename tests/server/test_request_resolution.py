"""Unit tests of request resolution: the truncation rule, check order and readiness (no engine;
a fake backend that only reports a state and limits)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from reranker_server.backend import EngineState
from reranker_server.bi_encoder import BiEncoder
from reranker_server.cross_encoder import CrossEncoder
from reranker_server.errors import (
    EngineUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
)
from reranker_server.llm_reranker import QWEN3_DEFAULT_INSTRUCTION, LlmReranker
from reranker_server.request_resolution import RequestResolver, settle_max_length
from reranker_server.schemas import (
    RerankBatchRequest,
    RerankBatchSimpleRequest,
    RerankRequest,
)
from reranker_server.scoring import GroupKey
from reranker_server.settings import Settings

LOW, HIGH = 4, 512


class FakeBackend(SimpleNamespace):
    """A fake of ``Backend`` with what the resolver reads: a state, the family and limits."""

    def __init__(self, family_class=CrossEncoder, state=EngineState.READY) -> None:
        super().__init__(
            model_name="served",
            family_class=family_class,
            family=SimpleNamespace(min_length=LOW),
            max_length=HIGH,
            state=state,
        )

    @property
    def alive(self) -> bool:
        return self.state is EngineState.READY

    def unavailable_reason(self) -> str:
        return f"the engine is {self.state.value}"


def resolver(**kwargs) -> RequestResolver:
    settings = Settings(max_pairs_per_request=10, max_text_chars=50, model_aliases=["alias"])
    return RequestResolver(settings, FakeBackend(**kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("explicit", "foreign", "expected"),
    [
        (None, [], HIGH),  # nothing asked: the model's limit
        (100, [], 100),
        (None, [4096], HIGH),  # a provider default above the model's limit is brought down
        (None, [1], LOW),  # ... and one below its format's minimum brought up
        (None, [0, -1], HIGH),  # 0 and -1 mean no limit
        (300, [200, None], 200),  # the smallest given wins
        (100, [200], 100),
        (10**6, [64], 64),  # an out-of-bounds max_length that does not win is no error
    ],
)
def test_the_truncation_rule(explicit, foreign, expected):
    assert settle_max_length(explicit, foreign, LOW, HIGH) == expected


@pytest.mark.parametrize(
    ("explicit", "foreign", "words"),
    [(HIGH + 1, [], "above"), (HIGH + 1, [0], "above"), (LOW - 1, [4096], "too small")],
)
def test_an_explicit_max_length_out_of_bounds_that_wins_is_refused(explicit, foreign, words):
    with pytest.raises(InvalidRequestError, match=words):
        settle_max_length(explicit, foreign, LOW, HIGH)


def test_group_key_takes_the_familys_instruction_and_the_settled_length():
    req = RerankRequest(query="q", documents=["a"], instruction="judge", max_tokens_per_doc=4096)
    assert resolver(family_class=BiEncoder).rerank(req).key == GroupKey("judge", HIGH)
    # A cross-encoder has no instruction input; an LLM reranker falls back to its default.
    assert resolver().rerank(req).key.instruction is None
    bare = RerankRequest(query="q", documents=["a"], max_length=64)
    key = resolver(family_class=LlmReranker).rerank(bare).key
    assert (key.instruction, key.max_length) == (QWEN3_DEFAULT_INSTRUCTION, 64)


def test_the_pairs_come_out_in_document_order():
    resolved = resolver().rerank(RerankRequest(query="q", documents=["a", {"text": "b"}]))
    assert resolved.pairs == [("q", "a"), ("q", "b")]


def test_checks_run_model_count_texts_then_readiness():
    loading = resolver(state=EngineState.LOADING)
    with pytest.raises(ModelNotFoundError):
        loading.rerank(RerankRequest(model="other", query="q", documents=["a"] * 20))
    with pytest.raises(InvalidRequestError, match="20 pairs"):
        loading.rerank(RerankRequest(model="alias", query="q", documents=["a"] * 20))
    with pytest.raises(InvalidRequestError, match="documents"):
        loading.rerank(RerankRequest(query="q", documents=["x" * 51]))
    with pytest.raises(EngineUnavailableError) as exc:
        loading.rerank(RerankRequest(query="q", documents=["a"]))
    assert exc.value.headers == {"Retry-After": "5"}
    with pytest.raises(EngineUnavailableError) as exc:
        resolver(state=EngineState.DEAD).rerank(RerankRequest(query="q", documents=["a"]))
    assert exc.value.headers == {"Retry-After": "30"}


def test_batch_errors_name_the_request():
    req = RerankBatchRequest(
        requests=[
            RerankRequest(query="q", documents=["a"]),
            RerankRequest(query="q", documents=["a"], max_length=HIGH + 1),
        ]
    )
    with pytest.raises(InvalidRequestError, match=r"^requests\[1\]: max_length"):
        resolver().rerank_batch(req)


def test_pairs_out_of_range_are_refused_and_in_range_resolved():
    def simple(pairs):
        return RerankBatchSimpleRequest(queries=["q"], documents=["a", "b"], pairs=pairs)

    with pytest.raises(InvalidRequestError, match=r"pairs\[1\] = \[0, 2\] is out of range"):
        resolver().pairs(simple([[0, 1], [0, 2]]))
    resolved = resolver().pairs(simple([[0, 1], [0, 0]]))
    assert resolved.pairs == [("q", "b"), ("q", "a")] and resolved.key == GroupKey(None, HIGH)
