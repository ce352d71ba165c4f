"""One step from a parsed request to what the queue needs: the pairs and their ``GroupKey``.

``RequestResolver`` checks, in this order, the model a request names (404), its pair count and
its texts (422; the errors name the fields as the request's shape does, TEI's ``texts`` for
its documents), that the engine is ready (503, checked once per request: the model's limits
are known only once it is loaded), and its truncation length (422). Every HTTP error of a
request's validation is raised here; the backend raises none.

The truncation rule (``settle_max_length``): a request's limits are its ``max_length`` and the
limits other servers' clients send (``max_tokens_per_doc``, ``truncate_prompt_tokens``; 0 or -1
means none). Those foreign limits are first brought within the model's bounds
``[family.min_length, model max_length]``, because clients send their provider's default
(Cohere's 4096) whatever the model. The smallest limit given wins; with none, the model's
limit. An explicit ``max_length`` that wins while out of bounds is a 422, not silently changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend import Backend, EngineState
from .compat import document_texts
from .errors import EngineUnavailableError, InvalidRequestError, ModelNotFoundError
from .request_limits import check_text_lengths
from .schemas import RerankBatchRequest, RerankBatchSimpleRequest, RerankRequest
from .scoring import GroupKey, Pair
from .settings import Settings


@dataclass(frozen=True)
class ResolvedRerank:
    """A rerank request ready to score: the text ranked for each document, and its group."""

    request: RerankRequest
    texts: list[str]
    key: GroupKey

    @property
    def pairs(self) -> list[Pair]:
        return [(self.request.query, t) for t in self.texts]

    @property
    def priority(self) -> int:
        return self.request.priority or 0


@dataclass(frozen=True)
class ResolvedPairs:
    """Pairs ready to score (``/rerank_batch_simple``), and their group."""

    pairs: list[Pair]
    key: GroupKey
    priority: int = 0  # lower is served first (vLLM's field)


#: The model's truncation bounds (lowest, highest), known once the engine is ready.
_Bounds = tuple[int, int]


class RequestResolver:
    """Validates requests against this server's model, limits and engine state."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend

    # ---- per endpoint -----------------------------------------------------------------------

    def rerank(self, req: RerankRequest, documents_field: str = "documents") -> ResolvedRerank:
        """``documents_field``: what the sender's shape calls the documents, for the errors
        (TEI's ``texts``)."""
        self.check_model(req.model)
        self.check_pair_count(len(req.documents))
        texts = self._texts_of(req, documents_field)
        return self._resolved(req, texts, self._ready_bounds())

    def rerank_batch(self, req: RerankBatchRequest) -> list[ResolvedRerank]:
        self.check_model(req.model)
        self.check_pair_count(sum(len(r.documents) for r in req.requests))
        resolved: list[ResolvedRerank] = []
        bounds: _Bounds | None = None
        for i, r in enumerate(req.requests):
            try:
                self.check_model(r.model)
                texts = self._texts_of(r)
                bounds = bounds or self._ready_bounds()
                resolved.append(self._resolved(r, texts, bounds))
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"requests[{i}]: {exc.detail}") from exc
        return resolved

    def pairs(self, req: RerankBatchSimpleRequest) -> ResolvedPairs:
        self.check_model(req.model)
        self.check_pair_count(len(req.pairs))
        check_text_lengths(
            [("queries", req.queries), ("documents", req.documents)],
            self.settings.max_text_chars,
        )
        nq, nd = len(req.queries), len(req.documents)
        for i, (qi, dj) in enumerate(req.pairs):
            if not (0 <= qi < nq and 0 <= dj < nd):
                raise InvalidRequestError(
                    f"pairs[{i}] = [{qi}, {dj}] is out of range: there are {nq} queries and "
                    f"{nd} documents (indexes start at 0)"
                )
        max_length = settle_max_length(req.max_length, [], *self._ready_bounds())
        key = GroupKey(self.backend.family_class.instruction_of(req.instruction), max_length)
        return ResolvedPairs(
            [(req.queries[qi], req.documents[dj]) for qi, dj in req.pairs], key, req.priority or 0
        )

    # ---- checks -----------------------------------------------------------------------------

    def check_model(self, name: str | None) -> None:
        """A request may name the model (Cohere, Jina and vLLM clients do); it must be this one."""
        if name is None:
            return
        served = self.backend.model_name
        accepted = {served, self.settings.model, *self.settings.model_aliases}
        if name not in accepted:
            aliases = self.settings.model_aliases
            also = f" (or its aliases {', '.join(aliases)})" if aliases else ""
            raise ModelNotFoundError(
                f"the model {name!r} is not served here: this server serves {served!r}{also}; "
                "send that name, or none (RERANKER_MODEL_ALIASES adds names)"
            )

    def check_pair_count(self, n: int) -> None:
        limit = self.settings.max_pairs_per_request
        if n > limit:
            raise InvalidRequestError(
                f"the request has {n} pairs, more than this server's limit of {limit} per "
                "request; split it into smaller requests (reranker_client does this for you)"
            )

    def _texts_of(self, req: RerankRequest, documents_field: str = "documents") -> list[str]:
        texts = document_texts(req)
        check_text_lengths(
            [("query", req.query), (documents_field, texts)], self.settings.max_text_chars
        )
        return texts

    def _ready_bounds(self) -> _Bounds:
        """The model's bounds; 503 while the engine is loading or after it died."""
        backend = self.backend
        if not backend.alive or backend.family is None:
            retry = "5" if backend.state is EngineState.LOADING else "30"
            raise EngineUnavailableError(
                backend.unavailable_reason(), headers={"Retry-After": retry}
            )
        return backend.family.min_length, backend.max_length

    def _resolved(self, req: RerankRequest, texts: list[str], bounds: _Bounds) -> ResolvedRerank:
        foreign = [req.max_tokens_per_doc, req.truncate_prompt_tokens]
        max_length = settle_max_length(req.max_length, foreign, *bounds)
        key = GroupKey(self.backend.family_class.instruction_of(req.instruction), max_length)
        return ResolvedRerank(req, texts, key)


def settle_max_length(
    explicit: int | None, foreign: list[int | None], lowest: int, highest: int
) -> int:
    """The truncation length of a request with these limits, within the model's bounds
    ``[lowest, highest]``, under the module's rule (see its docstring)."""
    limits = [min(max(v, lowest), highest) for v in foreign if v is not None and v > 0]
    if explicit is not None:
        limits.append(explicit)
    if not limits:
        return highest
    chosen = min(limits)
    if chosen > highest:
        raise InvalidRequestError(
            f"max_length {chosen} is above this model's limit of {highest} tokens"
        )
    if chosen < lowest:
        raise InvalidRequestError(
            f"max_length {chosen} is too small for this model: it needs at least "
            f"{lowest} tokens for its input format"
        )
    return chosen
