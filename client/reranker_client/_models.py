"""Wire models of the reranker service, as plain dataclasses.

They mirror the server's JSON bodies field for field, but are defined here rather than imported
from the server package so that the client depends on ``httpx`` alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._types import JSONObject

__all__ = [
    "RerankRequest",
    "RerankRequestLike",
    "RerankResponse",
    "RerankResult",
    "ServerInfo",
    "ServerLimits",
    "Usage",
]


@dataclass
class RerankRequest:
    """One query and the documents to rank against it (the body of ``POST /rerank``).

    Attributes:
        query: The query text.
        documents: The candidate documents; results refer to them by position.
        instruction: Optional task instruction for instruction-following rerankers.
        max_length: Optional per-pair token limit (the server truncates longer pairs).
        top_n: Return only the ``top_n`` best results (all when ``None``).
        return_documents: Echo each document's text in its result.
    """

    query: str
    documents: Sequence[str]
    instruction: str | None = None
    max_length: int | None = None
    top_n: int | None = None
    return_documents: bool = False

    def __post_init__(self) -> None:
        # A bare string is a Sequence[str] too, and would be ranked character by character.
        if isinstance(self.documents, str):
            raise TypeError("documents must be a sequence of strings, not a single string")
        if self.top_n is not None and self.top_n < 0:
            raise ValueError(f"top_n must be >= 0, got {self.top_n}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RerankRequest:
        """Build a request from a mapping with the same keys as the JSON body."""
        return cls(**dict(data))

    def to_dict(self) -> JSONObject:
        """Return the JSON body of ``POST /rerank`` for this request."""
        return {
            "query": self.query,
            "documents": list(self.documents),
            "instruction": self.instruction,
            "max_length": self.max_length,
            "top_n": self.top_n,
            "return_documents": self.return_documents,
        }


#: What ``rerank_batch`` accepts for each request.
RerankRequestLike = RerankRequest | Mapping[str, Any]


@dataclass
class Usage:
    """Work done by the server for a response.

    Attributes:
        pairs: Query-document pairs scored.
        cache_hits: Pairs whose score came from the server's cache.
    """

    pairs: int = 0
    cache_hits: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.pairs + other.pairs, self.cache_hits + other.cache_hits)


@dataclass
class RerankResult:
    """The score of one document.

    Attributes:
        index: Position of the document in the request's ``documents``.
        relevance_score: The score results are ranked by (higher is more relevant).
        raw_score: The model's unnormalised score, when the server reports it.
        document: The document text, when ``return_documents`` was set.
    """

    index: int
    relevance_score: float
    raw_score: float | None = None
    document: str | None = None


@dataclass
class RerankResponse:
    """The answer to one rerank request.

    Attributes:
        model: Name of the model that scored the documents.
        results: Results sorted by ``relevance_score``, best first.
        usage: Work done by the server.
    """

    model: str
    results: list[RerankResult]
    usage: Usage = field(default_factory=Usage)


@dataclass
class ServerLimits:
    """Limits the server enforces (the ``limits`` object of ``GET /info``).

    Attributes:
        max_pairs_per_request: Most pairs one request may carry; the clients' default chunk size.
        max_length: Longest pair, in tokens, the model accepts.
        batch_max_pairs: Most pairs the server scores in one engine batch.
        batch_max_tokens: Most tokens the engine scores in one step (``None`` when unknown).
        batch_max_wait_ms: How long the server waits to fill an engine batch.
    """

    max_pairs_per_request: int
    max_length: int
    batch_max_pairs: int
    batch_max_tokens: int | None
    batch_max_wait_ms: float


@dataclass
class ServerInfo:
    """What ``GET /info`` says about the server.

    Attributes:
        model: Name of the served model.
        family: The model family.
        version: The server's version.
        limits: The limits the server enforces.
        raw: The whole decoded body, including fields this client does not know.
    """

    model: str
    family: str
    version: str
    limits: ServerLimits
    raw: JSONObject = field(default_factory=dict, repr=False)
