"""Wire models of the HTTP API (documented in the OpenAPI schema at /docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator


def _require_text(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} is empty; it must contain text")
    return value


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt option must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class RerankRequest(_Strict):
    query: StrictStr = Field(description="The query to rank the documents against.")
    documents: list[StrictStr] = Field(
        min_length=1, description="Documents to score; results point into this list by index."
    )
    instruction: StrictStr | None = Field(
        default=None,
        description="Task instruction (LLM rerankers; prefixed to the query for bi-encoders). "
        "The model's default when omitted.",
    )
    max_length: int | None = Field(
        default=None,
        ge=1,
        description="Token limit per pair (per text for bi-encoders); documents are cut first. "
        "The model's limit when omitted.",
    )
    top_n: int | None = Field(default=None, ge=1, description="Return only the best n results.")
    return_documents: bool = Field(default=False, description="Echo each document's text.")

    @field_validator("query")
    @classmethod
    def _query_not_empty(cls, v: str) -> str:
        return _require_text(v, "the query")

    @field_validator("documents")
    @classmethod
    def _documents_not_empty(cls, docs: list[str]) -> list[str]:
        for i, doc in enumerate(docs):
            if not doc.strip():
                raise ValueError(f"document {i} is empty; every document must contain text")
        return docs


class RerankResult(BaseModel):
    index: int = Field(description="Position of the document in the request's `documents`.")
    relevance_score: float = Field(description="Higher is more relevant (see /info for range).")
    raw_score: float | None = Field(
        default=None, description="The model's raw output (logit for cross-encoders)."
    )
    document: str | None = None


class Usage(BaseModel):
    pairs: int = Field(description="Pairs in the request.")
    cache_hits: int = Field(description="Pairs answered from the score cache.")


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: Usage


class RerankBatchRequest(_Strict):
    requests: list[RerankRequest] = Field(min_length=1)


class RerankBatchResponse(BaseModel):
    results: list[RerankResponse] = Field(description="One response per request, in order.")


class RerankBatchSimpleRequest(_Strict):
    """The training call: texts sent once, pairs by index, one instruction and max_length."""

    instruction: StrictStr | None = None
    max_length: int | None = Field(default=None, ge=1)
    queries: list[StrictStr] = Field(min_length=1)
    documents: list[StrictStr] = Field(min_length=1)
    pairs: list[tuple[int, int]] = Field(
        min_length=1, description="[query_index, document_index] pairs to score."
    )

    @field_validator("queries", "documents")
    @classmethod
    def _texts_not_empty(cls, texts: list[str], info) -> list[str]:  # type: ignore[no-untyped-def]
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"{info.field_name} {i} is empty; every text must contain text")
        return texts


class RerankBatchSimpleResponse(BaseModel):
    model: str
    scores: list[float] = Field(description="relevance_score of each pair, in pair order.")
    usage: Usage


class Limits(BaseModel):
    max_pairs_per_request: int
    max_length: int
    batch_max_pairs: int
    batch_max_tokens: int | None
    batch_max_wait_ms: float
    max_queued_pairs: int


class InfoResponse(BaseModel):
    model: str
    family: str
    version: str
    score_range: str = Field(description="What relevance_score means for this family.")
    default_instruction: str | None
    cache_size: int
    limits: Limits


class HealthResponse(BaseModel):
    status: str
    model: str


class ErrorResponse(BaseModel):
    error: str = Field(description="Stable machine-readable code, e.g. invalid_request.")
    detail: str = Field(description="What was wrong, in words a person can act on.")
