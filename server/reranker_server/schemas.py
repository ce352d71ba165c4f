"""Wire models of the HTTP API (documented in the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictStr,
    Tag,
    model_validator,
)

from .request_limits import TEXT_PATTERN


def _unicode_only(value: str) -> str:
    # JSON can carry a lone surrogate ("\ud800"), which no tokenizer or UTF-8 answer can hold.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"holds a lone surrogate (\\u{ord(value[exc.start]):04x} at character {exc.start}), "
            "which is not a Unicode character; send valid UTF-8 text"
        ) from None
    return value


def _json_integer(value: Any) -> Any:
    # JSON Schema's "integer" includes 3.0 but not "3" or true; pydantic's lax int takes all
    # three and its strict int refuses 3.0.
    if isinstance(value, (str, bool)):
        raise ValueError("Input should be a valid integer")
    return value


# Integers as JSON Schema means them; bounds go before the validator, or pydantic leaves them
# out of the OpenAPI schema.
Integer = Annotated[int, BeforeValidator(_json_integer)]
NonNegative = Annotated[int, Field(ge=0), BeforeValidator(_json_integer)]
Positive = Annotated[int, Field(ge=1), BeforeValidator(_json_integer)]
VllmTokenLimit = Annotated[int, Field(ge=-1), BeforeValidator(_json_integer)]  # -1 = the model's
#: Any string a client sends: valid Unicode.
Str = Annotated[StrictStr, AfterValidator(_unicode_only)]
#: A query or document: valid Unicode with at least one character that is not a space.
Text = Annotated[
    StrictStr,
    Field(pattern=TEXT_PATTERN, description="Non-empty text (not only spaces)."),
    AfterValidator(_unicode_only),
]


def _check_json_strings(value: Any) -> None:
    if isinstance(value, str):
        _unicode_only(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_json_strings(k)
            _check_json_strings(v)
    elif isinstance(value, list):
        for v in value:
            _check_json_strings(v)


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt option must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class RerankDocument(BaseModel):
    """A document given as an object (Cohere, Jina, vLLM): its ``text``, and any other fields
    (ranked on when the request names them in ``rank_fields``, and echoed back)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"minProperties": 1})
    # Absent (None), never null: the schema must not offer {"text": null}, an object with
    # nothing to rank, so the type is not Optional.
    text: Text = Field(  # type: ignore[assignment]
        default=None,
        json_schema_extra=lambda schema: schema.pop("default", None),  # type: ignore[arg-type,misc]
        description="The text to rank. Without it (or with rank_fields) the document is ranked "
        "on its fields as `field: value` lines.",
    )

    @model_validator(mode="after")
    def _has_content(self) -> RerankDocument:
        _check_json_strings(self.model_extra)
        if self.text is None and not self.model_extra:
            raise ValueError("the document object is empty; give it a text")
        return self


def _document_kind(value: Any) -> str:
    return "object-document" if isinstance(value, dict) else "string-document"


#: A document as a string or an object; the tags keep validation errors to the one form sent.
TextOrDocument = Annotated[
    Annotated[Text, Tag("string-document")] | Annotated[RerankDocument, Tag("object-document")],
    Discriminator(_document_kind),
]


class RerankRequest(_Strict):
    """One query against a list of documents, in the shape of Cohere's v1/v2, Jina's and
    vLLM's rerank APIs (their options below are honoured or, where said, ignored)."""

    model: Str | None = Field(
        default=None,
        description="The served model's name or one of its aliases; any other name is a 404.",
    )
    query: Text = Field(description="The query to rank the documents against.")
    documents: list[TextOrDocument] = Field(
        min_length=1,
        description="Documents to score, as strings or objects with `text` (or the "
        "`rank_fields`); results point into this list by index.",
    )
    instruction: Str | None = Field(
        default=None,
        description="Task instruction (LLM rerankers; prefixed to the query for bi-encoders). "
        "The model's default when omitted.",
    )
    max_length: Positive | None = Field(
        default=None,
        description="Token limit per pair (per text for bi-encoders); documents are cut first. "
        "The model's limit when omitted; above it is a 422.",
    )
    top_n: NonNegative | None = Field(
        default=None, description="Return only the best n results; null or 0 = all."
    )
    return_documents: StrictBool | None = Field(
        default=None, description="Echo each document (as `{text, ...}`); default false."
    )
    rank_fields: list[Str] | None = Field(
        default=None,
        description="For object documents: the fields to rank on, in this order, as "
        "`field: value` lines (Cohere v1); a document with none of them is ranked on its text "
        "(or, without one, on all its fields).",
    )
    max_tokens_per_doc: NonNegative | None = Field(
        default=None,
        description="Cohere v2 / vLLM: a token limit, applied as max_length (the smallest of "
        "the limits given wins; above the model's limit = the model's limit; 0 = none).",
    )
    truncate_prompt_tokens: Annotated[int, Field(ge=-1), BeforeValidator(_json_integer)] | None = (
        Field(
            default=None,
            description="vLLM: a token limit, applied as max_length like max_tokens_per_doc "
            "(-1 = the model's limit).",
        )
    )
    priority: Integer | None = Field(
        default=None,
        description="vLLM's field: lower is served first; default 0. Requests waiting long "
        "move up one level per RERANKER_PRIORITY_AGING_S, so a low priority still progresses.",
    )
    max_chunks_per_doc: Integer | None = Field(
        default=None, description="Accepted and ignored (Cohere v1): documents are never chunked."
    )
    raw_scores: StrictBool | None = Field(
        default=None,
        description="Accepted and ignored: results carry both relevance_score and raw_score.",
    )


class RerankDocumentOut(BaseModel):
    """The document as it was sent: ``text``, and an object's other fields."""

    model_config = ConfigDict(extra="allow")
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="Position of the document in the request's `documents`.")
    relevance_score: float = Field(description="Higher is more relevant (see /info for range).")
    raw_score: float | None = Field(
        default=None, description="The model's raw output (logit for cross-encoders)."
    )
    document: RerankDocumentOut | None = Field(
        default=None, description="The document, when return_documents was true."
    )


class Usage(BaseModel):
    pairs: int = Field(description="Pairs in the request.")
    cache_hits: int = Field(description="Pairs answered from the score cache.")


class RerankUsage(Usage):
    prompt_tokens: int = Field(
        description="Tokens of the request's texts as the model reads them (each cut to "
        "max_length; the query counted once per document; prompt templates not counted)."
    )
    total_tokens: int = Field(description="Equal to prompt_tokens: a reranker generates none.")


class RerankResponse(BaseModel):
    id: str = Field(description="This answer's id.")
    model: str
    results: list[RerankResult] = Field(description="Sorted by relevance_score, best first.")
    usage: RerankUsage


class RerankBatchRequest(_Strict):
    model: Str | None = Field(
        default=None, description="The served model's name or an alias; else a 404."
    )
    requests: list[RerankRequest] = Field(min_length=1)


class RerankBatchResponse(BaseModel):
    results: list[RerankResponse] = Field(description="One response per request, in order.")


class RerankBatchSimpleRequest(_Strict):
    """The training call: texts sent once, pairs by index, one instruction and max_length."""

    model: Str | None = Field(
        default=None, description="The served model's name or an alias; else a 404."
    )
    instruction: Str | None = None
    max_length: Positive | None = None
    queries: list[Text] = Field(min_length=1)
    documents: list[Text] = Field(min_length=1)
    pairs: list[tuple[NonNegative, NonNegative]] = Field(
        min_length=1, description="[query_index, document_index] pairs to score."
    )
    priority: Integer | None = Field(
        default=None,
        description="vLLM's field: lower is served first; default 0. Requests waiting long "
        "move up one level per RERANKER_PRIORITY_AGING_S, so a low priority still progresses.",
    )


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


#: What every scoring route may answer besides 200, for its OpenAPI entry (``responses=``): the
#: ``{error, detail}`` body of ``errors.error_body``, not FastAPI's default ``HTTPValidationError``.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid API key"},
    404: {"model": ErrorResponse, "description": "The request names another model"},
    413: {"model": ErrorResponse, "description": "Request body too large"},
    422: {"model": ErrorResponse, "description": "Invalid request"},
    429: {"model": ErrorResponse, "description": "Too much work queued; retry later"},
    503: {"model": ErrorResponse, "description": "Engine loading or dead"},
}
