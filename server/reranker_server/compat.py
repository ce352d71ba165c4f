"""The rerank shapes of other servers, so that their clients work against this one unchanged.

- Cohere v1 and v2, Jina and vLLM: ``POST /v1/rerank`` and ``/v2/rerank`` (and ``/rerank``) with
  ``{model, query, documents, top_n, ...}``; documents as strings or ``{text: ...}`` objects;
  the answer is ``{id, model, results: [{index, relevance_score, document?}], usage}``. Those two
  routes ignore fields they do not know, as vLLM does; ``/rerank`` refuses them.
- Hugging Face text-embeddings-inference (TEI): ``POST /rerank`` with ``{query, texts, ...}``
  answers a bare list ``[{index, score, text?}]`` over every text, and errors in TEI's
  ``{error, error_type}`` shape.

The wire models of the first shape are the native ``RerankRequest``/``RerankResponse``
(schemas); this module holds what differs: the lenient variant, TEI's models, and the mappings.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from .schemas import RerankDocument, RerankRequest, RerankResponse, Text, _Strict


class LenientRerankRequest(RerankRequest):
    """``RerankRequest`` that ignores unknown fields (``/v1/rerank``, ``/v2/rerank``), as vLLM
    and Cohere-compatible servers do: clients send options this server has no use for."""

    model_config = ConfigDict(extra="ignore")


class TeiRerankRequest(_Strict):
    """text-embeddings-inference's rerank request (recognised on ``/rerank`` by ``texts``)."""

    query: Text = Field(description="The query to rank the texts against.")
    texts: list[Text] = Field(min_length=1, description="Texts to score.")
    raw_scores: StrictBool | None = Field(
        default=None, description="Answer the model's raw score instead of relevance_score."
    )
    return_text: StrictBool | None = Field(default=None, description="Echo each text.")
    top_n: int | None = Field(
        default=None,
        ge=1,
        description="Answer only the n best texts (not TEI's own field; LiteLLM's `huggingface` "
        "provider sends it).",
    )
    truncate: StrictBool | None = Field(
        default=None,
        description="Accepted; texts are always cut to the model's limit (documents first).",
    )
    truncation_direction: Literal["Right", "right"] | None = Field(
        default=None, description="Only `Right`: texts are cut at their end."
    )


class TeiRank(BaseModel):
    index: int = Field(description="Position of the text in the request's `texts`.")
    score: float
    text: StrictStr | None = None


class TeiErrorResponse(BaseModel):
    error: str = Field(description="What was wrong.")
    error_type: str = Field(description="TEI's error class, e.g. Validation or Overloaded.")
    detail: str = Field(description="The same as `error`, as in this server's other errors.")


def tei_as_rerank(req: TeiRerankRequest) -> RerankRequest:
    """The TEI request as the native one: every text, documents echoed when asked."""
    return RerankRequest(
        query=req.query,
        documents=list(req.texts),
        return_documents=bool(req.return_text),
        top_n=req.top_n,
    )


def tei_ranks(response: RerankResponse, raw_scores: bool) -> list[TeiRank]:
    return [
        TeiRank(
            index=r.index,
            score=r.raw_score if raw_scores and r.raw_score is not None else r.relevance_score,
            text=r.document.text if r.document is not None else None,
        )
        for r in response.results
    ]


def document_texts(req: RerankRequest) -> list[str]:
    """The text to rank for each document: the string, the object's ``text``, or its
    ``rank_fields`` as ``field: value`` lines in the order given (as Cohere v1 ranks them)."""
    return [
        doc if isinstance(doc, str) else _object_text(doc, req.rank_fields) for doc in req.documents
    ]


def _object_text(doc: RerankDocument, rank_fields: list[str] | None) -> str:
    fields = {**(doc.model_extra or {}), "text": doc.text}
    if rank_fields:
        lines = [_line(name, fields[name]) for name in rank_fields if fields.get(name) is not None]
        if lines:
            return "\n".join(lines)
    if doc.text is not None:
        return doc.text
    # No text (the schema lets an object have any fields): all of them, in the order sent.
    return "\n".join(_line(name, value) for name, value in (doc.model_extra or {}).items())


def _line(name: str, value: object) -> str:
    return f"{name}: {value if isinstance(value, str) else json.dumps(value)}"
