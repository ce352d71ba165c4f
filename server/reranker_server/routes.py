"""HTTP routes: each one fetches the service from app.state and hands it the parsed request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Discriminator, Tag

from . import __version__
from .compat import (
    LenientRerankRequest,
    TeiErrorResponse,
    TeiRank,
    TeiRerankRequest,
    tei_as_rerank,
    tei_ranks,
)
from .errors import TEI_STYLE, error_body
from .schemas import (
    ERROR_RESPONSES,
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    Limits,
    RerankBatchRequest,
    RerankBatchResponse,
    RerankBatchSimpleRequest,
    RerankBatchSimpleResponse,
    RerankRequest,
    RerankResponse,
)
from .service import RerankService


def get_service(request: Request) -> RerankService:
    return request.app.state.service


ServiceDep = Annotated[RerankService, Depends(get_service)]

router = APIRouter()


def _body_kind(body: Any) -> str:
    # TEI's request is told apart by its `texts` (the others send `documents`).
    return "TeiRerankRequest" if isinstance(body, dict) and "texts" in body else "RerankRequest"


#: /rerank's body: the native (and Cohere/Jina/vLLM) request, or TEI's.
NativeOrTei = Annotated[
    Annotated[RerankRequest, Tag("RerankRequest")]
    | Annotated[TeiRerankRequest, Tag("TeiRerankRequest")],
    Discriminator(_body_kind),
]

_TEI_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    422: {
        "model": ErrorResponse | TeiErrorResponse,
        "description": "Invalid request (in TEI's shape for TEI-shaped requests)",
    },
}


@router.post(
    "/rerank",
    response_model=RerankResponse | list[TeiRank],
    responses=_TEI_ERRORS,
    response_model_exclude_none=True,
)
async def rerank(
    body: Annotated[NativeOrTei, Body()], request: Request, service: ServiceDep
) -> RerankResponse | list[TeiRank]:
    """Rank documents against one query; results sorted by relevance, `index` into `documents`.

    A body with `texts` is text-embeddings-inference's request, answered as TEI does: a list of
    `{index, score, text?}` over every text, best first. Unknown fields are refused here; the
    /v1 and /v2 routes ignore them."""
    if isinstance(body, TeiRerankRequest):
        request.state.error_style = TEI_STYLE
        response = await service.rerank(tei_as_rerank(body), documents_field="texts")
        return tei_ranks(response, raw_scores=bool(body.raw_scores))
    return await service.rerank(body)


@router.post(
    "/v1/rerank",
    response_model=RerankResponse,
    responses=ERROR_RESPONSES,
    response_model_exclude_none=True,
)
async def rerank_v1(body: LenientRerankRequest, service: ServiceDep) -> RerankResponse:
    """/rerank for Cohere v1, Jina and vLLM clients; fields this server does not know are
    ignored."""
    return await service.rerank(body)


@router.post(
    "/v2/rerank",
    response_model=RerankResponse,
    responses=ERROR_RESPONSES,
    response_model_exclude_none=True,
)
async def rerank_v2(body: LenientRerankRequest, service: ServiceDep) -> RerankResponse:
    """/rerank for Cohere v2 and vLLM clients; fields this server does not know are ignored."""
    return await service.rerank(body)


@router.post(
    "/rerank_batch",
    response_model=RerankBatchResponse,
    responses=ERROR_RESPONSES,
    response_model_exclude_none=True,
)
async def rerank_batch(body: RerankBatchRequest, service: ServiceDep) -> RerankBatchResponse:
    """Several rerank requests at once (instructions and max_length may differ)."""
    return await service.rerank_batch(body)


@router.post(
    "/rerank_batch_simple", response_model=RerankBatchSimpleResponse, responses=ERROR_RESPONSES
)
async def rerank_batch_simple(
    body: RerankBatchSimpleRequest, service: ServiceDep
) -> RerankBatchSimpleResponse:
    """The training call: texts sent once, pairs by index, scores back in pair order."""
    return await service.rerank_batch_simple(body)


@router.get("/health", response_model=HealthResponse, responses={503: ERROR_RESPONSES[503]})
async def health(service: ServiceDep) -> Response:
    """200 only when the engine is loaded and alive; 503 while loading or after it died."""
    backend = service.backend
    if not backend.alive:
        return JSONResponse(
            error_body("engine_unavailable", backend.unavailable_reason()), status_code=503
        )
    return JSONResponse(HealthResponse(status="ok", model=backend.model_name).model_dump())


@router.get("/livez", response_model=HealthResponse)
async def livez(service: ServiceDep) -> HealthResponse:
    """200 while this process can answer, whatever the engine's state: a liveness probe. A
    restart cannot cure an engine outage, which /health (the readiness probe) reports."""
    return HealthResponse(status="alive", model=service.backend.model_name)


@router.get("/info", response_model=InfoResponse)
async def info(service: ServiceDep) -> InfoResponse:
    """The model, its family and this server's limits (max_length is 0 until the model loads)."""
    b, s = service.backend, service.settings
    return InfoResponse(
        model=b.model_name,
        family=b.family_class.kind.value,
        version=__version__,
        score_range=b.family_class.score_range,
        default_instruction=b.family_class.default_instruction,
        cache_size=s.cache_size,
        limits=Limits(
            max_pairs_per_request=s.max_pairs_per_request,
            max_length=b.max_length,
            batch_max_pairs=s.batch_max_pairs,
            batch_max_tokens=b.batch_max_tokens,
            batch_max_wait_ms=s.batch_max_wait_ms,
            max_queued_pairs=s.max_queued_pairs,
        ),
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(service: ServiceDep) -> Response:
    m = service.metrics
    body, content_type = m.exposition()
    return Response(body, media_type=content_type)
