"""More providers' rerank shapes: NVIDIA NIM, Voyage, Infinity's answer and DeepInfra.

Each is served on a route of its own, so the answer's shape follows from the route (the way
LiteLLM's providers build their URLs from ``api_base``):

- NVIDIA NIM: ``POST /v1/ranking`` and LiteLLM's ``nvidia_nim`` path
  ``POST /v1/retrieval/{model}/reranking``: ``{model, query: {text}, passages: [{text}],
  truncate?, top_k?}`` -> ``{rankings: [{index, logit}]}``, best first. ``logit`` is the model's
  raw score. Texts are always cut to the model's limit (``truncate: NONE`` is accepted).
- Voyage: ``POST /voyage/v1/rerank`` (LiteLLM ``voyage`` with ``api_base=<server>/voyage``):
  ``{model, query, documents, top_k?, return_documents?, truncation?}`` -> ``{object: "list",
  data: [{index, relevance_score, document?}], model, usage: {total_tokens}}``. Its request is
  Cohere's with ``top_k``, so on the shared ``/v1/rerank`` it could not be told apart whenever
  ``top_k`` is absent: hence the prefix.
- Infinity: ``POST /infinity/rerank`` and ``/infinity/v1/rerank`` (LiteLLM ``infinity`` with
  ``api_base=<server>/infinity``): Cohere's request; the answer's ``document`` is a plain string,
  as Infinity answers (LiteLLM reads it so). Its request is Cohere's exactly, so only the route
  can pick the shape.
- DeepInfra: ``POST /inference/{model}`` (LiteLLM ``deepinfra``): ``{queries, documents}`` zipped
  pairwise -> ``{scores, input_tokens, request_id, inference_status}``, scores in input order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from .compat import LenientRerankRequest
from .errors import InvalidRequestError
from .schemas import ERROR_RESPONSES, NonNegative, RerankRequest, RerankResponse, Str, Text
from .service import RerankService


def _service(request: Request) -> RerankService:
    return request.app.state.service


ServiceDep = Annotated[RerankService, Depends(_service)]

# Every route here answers errors in the native {error, detail} shape (errors.py).
router = APIRouter(responses=ERROR_RESPONSES)


class _Lenient(BaseModel):
    # Providers' clients send options this server has no use for; ignore them, as /v1 does.
    model_config = ConfigDict(extra="ignore")


# ---- NVIDIA NIM -------------------------------------------------------------------------------


class NimText(_Lenient):
    text: Text = Field(description="The text.")


class NimRankingRequest(_Lenient):
    """NVIDIA NIM's ranking request."""

    model: Str | None = Field(default=None, description="The served model's name or an alias.")
    query: NimText = Field(description="The query, as `{text}`.")
    passages: list[NimText] = Field(min_length=1, description="Passages to rank, as `{text}`.")
    truncate: Literal["NONE", "END"] | None = Field(
        default=None, description="Accepted; texts are always cut to the model's limit."
    )
    top_k: NonNegative | None = Field(default=None, description="Keep the best k (all if unset).")

    def to_rerank(self) -> RerankRequest:
        return RerankRequest(
            model=self.model,
            query=self.query.text,
            documents=[p.text for p in self.passages],
            top_n=self.top_k,
        )


class NimRanking(BaseModel):
    index: int = Field(description="Position of the passage in the request's `passages`.")
    logit: float = Field(description="The model's raw score (higher is more relevant).")


class NimRankingResponse(BaseModel):
    rankings: list[NimRanking] = Field(description="Best first.")


def _nim_answer(response: RerankResponse) -> NimRankingResponse:
    return NimRankingResponse(
        rankings=[
            NimRanking(
                index=r.index, logit=r.raw_score if r.raw_score is not None else r.relevance_score
            )
            for r in response.results
        ]
    )


@router.post("/v1/ranking", response_model=NimRankingResponse)
async def nim_ranking(body: NimRankingRequest, service: ServiceDep) -> NimRankingResponse:
    """NVIDIA NIM's ranking route."""
    return _nim_answer(await service.rerank(body.to_rerank()))


@router.post("/v1/retrieval/{model:path}/reranking", response_model=NimRankingResponse)
async def nim_retrieval_reranking(
    model: str, body: NimRankingRequest, service: ServiceDep
) -> NimRankingResponse:
    """NVIDIA NIM's hosted path (LiteLLM's ``nvidia_nim``); the body's model is checked."""
    return _nim_answer(await service.rerank(body.to_rerank()))


# ---- Voyage -----------------------------------------------------------------------------------


class VoyageRerankRequest(_Lenient):
    """Voyage AI's rerank request."""

    model: Str | None = Field(default=None, description="The served model's name or an alias.")
    query: Text = Field(description="The query.")
    documents: list[Text] = Field(min_length=1, description="Documents to rank.")
    top_k: NonNegative | None = Field(default=None, description="Keep the best k (all if unset).")
    return_documents: StrictBool | None = Field(default=None, description="Echo each document.")
    truncation: StrictBool | None = Field(
        default=None, description="Accepted; texts are always cut to the model's limit."
    )


class VoyageResult(BaseModel):
    index: int
    relevance_score: float
    document: str | None = None


class VoyageUsage(BaseModel):
    total_tokens: int


class VoyageRerankResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoyageResult] = Field(description="Best first.")
    model: str
    usage: VoyageUsage


@router.post(
    "/voyage/v1/rerank", response_model=VoyageRerankResponse, response_model_exclude_none=True
)
async def voyage_rerank(body: VoyageRerankRequest, service: ServiceDep) -> VoyageRerankResponse:
    """Voyage AI's rerank shape."""
    response = await service.rerank(
        RerankRequest(
            model=body.model,
            query=body.query,
            documents=list(body.documents),
            top_n=body.top_k,
            return_documents=bool(body.return_documents),
        )
    )
    return VoyageRerankResponse(
        data=[
            VoyageResult(
                index=r.index,
                relevance_score=r.relevance_score,
                document=r.document.text if r.document is not None else None,
            )
            for r in response.results
        ],
        model=response.model,
        usage=VoyageUsage(total_tokens=response.usage.total_tokens),
    )


# ---- Infinity ---------------------------------------------------------------------------------


class InfinityResult(BaseModel):
    index: int
    relevance_score: float
    document: str | None = Field(default=None, description="The document's text, a string.")


class InfinityUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class InfinityRerankResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    id: str
    created: int
    model: str
    results: list[InfinityResult] = Field(description="Best first.")
    usage: InfinityUsage


async def _infinity(body: LenientRerankRequest, service: RerankService) -> InfinityRerankResponse:
    response = await service.rerank(body)
    return InfinityRerankResponse(
        id=response.id,
        created=int(time.time()),
        model=response.model,
        results=[
            InfinityResult(
                index=r.index,
                relevance_score=r.relevance_score,
                document=r.document.text if r.document is not None else None,
            )
            for r in response.results
        ],
        usage=InfinityUsage(
            prompt_tokens=response.usage.prompt_tokens, total_tokens=response.usage.total_tokens
        ),
    )


@router.post("/infinity/rerank", response_model=InfinityRerankResponse)
async def infinity_rerank(
    body: LenientRerankRequest, service: ServiceDep
) -> InfinityRerankResponse:
    """Infinity's rerank answer (documents as plain strings)."""
    return await _infinity(body, service)


@router.post("/infinity/v1/rerank", response_model=InfinityRerankResponse)
async def infinity_rerank_v1(
    body: LenientRerankRequest, service: ServiceDep
) -> InfinityRerankResponse:
    """The same, for an ``api_base`` ending in ``/v1``."""
    return await _infinity(body, service)


# ---- DeepInfra --------------------------------------------------------------------------------


class DeepInfraRerankRequest(_Lenient):
    """DeepInfra's rerank inference request: ``queries[i]`` goes with ``documents[i]``."""

    queries: list[Text] = Field(min_length=1, description="One query per document.")
    documents: list[Text] = Field(min_length=1, description="Documents to score.")
    instruction: Str | None = Field(default=None, description="LLM rerankers' instruction.")


class DeepInfraStatus(BaseModel):
    status: str = "succeeded"
    runtime_ms: int
    cost: float = 0.0
    tokens_generated: int = 0


class DeepInfraRerankResponse(BaseModel):
    scores: list[float] = Field(description="One relevance score per document, in input order.")
    input_tokens: int
    request_id: str
    inference_status: DeepInfraStatus


def _scores_in_order(response: RerankResponse, n: int) -> list[float]:
    scores = [0.0] * n
    for r in response.results:
        scores[r.index] = r.relevance_score
    return scores


@router.post("/inference/{model:path}", response_model=DeepInfraRerankResponse)
async def deepinfra_inference(model: str, body: DeepInfraRerankRequest, service: ServiceDep) -> Any:
    """DeepInfra's rerank route; the model named in the path is checked."""
    if len(body.queries) != len(body.documents):
        raise InvalidRequestError(
            f"queries ({len(body.queries)}) and documents ({len(body.documents)}) must be as "
            "many: queries[i] is scored against documents[i]"
        )
    started = time.perf_counter()
    # One rerank per distinct query (a single query repeated, as LiteLLM sends, is one call).
    positions: dict[str, list[int]] = {}
    for i, q in enumerate(body.queries):
        positions.setdefault(q, []).append(i)
    scores = [0.0] * len(body.documents)
    tokens = 0
    for query, where in positions.items():
        docs: Sequence[str] = [body.documents[i] for i in where]
        response = await service.rerank(
            RerankRequest(
                model=model, query=query, documents=list(docs), instruction=body.instruction
            )
        )
        for i, score in zip(where, _scores_in_order(response, len(docs)), strict=True):
            scores[i] = score
        tokens += response.usage.prompt_tokens
    return DeepInfraRerankResponse(
        scores=scores,
        input_tokens=tokens,
        request_id=uuid.uuid4().hex,
        inference_status=DeepInfraStatus(runtime_ms=int((time.perf_counter() - started) * 1e3)),
    )
