"""Shared pieces of the loss tests: a small batch with real false negatives, and a fake service.

The fake service is a real :class:`RerankerClient` on an ``httpx.MockTransport`` that scores
``/rerank_batch_simple`` pairs with the cosine similarity of a guide model's embeddings, exactly as
the bi-encoder family of the real service does (or from a table: :class:`TableService`), and
records every request it answers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import torch
from reranker_client import RerankerClient
from sentence_transformers import SentenceTransformer

# 16 (anchor, positive, negative) triplets: topics with paraphrased anchors, paraphrased and
# duplicated positives, and negatives that answer another anchor (false negatives of the an block).
ANCHORS = [
    "How do I reset my account password?",
    "What is the way to change a forgotten password?",
    "What is the capital of France?",
    "Which city is the French capital?",
    "How long should I boil an egg?",
    "How many minutes does a soft boiled egg take?",
    "What is the tallest mountain on Earth?",
    "Which mountain is the highest in the world?",
    "How do I reset my account password?",
    "Why is the sky blue?",
    "What causes the blue colour of the sky?",
    "How do vaccines train the immune system?",
    "What is photosynthesis in plants?",
    "How do plants turn sunlight into energy?",
    "Who wrote the novel Pride and Prejudice?",
    "Which author wrote Pride and Prejudice?",
]
POSITIVES = [
    "Open the settings page and choose 'reset password' to get a reset link by email.",
    "Use the 'forgot password' link on the login page to set a new password.",
    "Paris is the capital and largest city of France.",
    "The capital of France is Paris.",
    "Boil an egg for about six to seven minutes for a soft yolk.",
    "A soft boiled egg takes around six minutes in boiling water.",
    "Mount Everest is the highest mountain above sea level.",
    "Mount Everest, in the Himalayas, is the tallest mountain in the world.",
    "Open the settings page and choose 'reset password' to get a reset link by email.",
    "Sunlight is scattered by air molecules, and blue light is scattered the most.",
    "Rayleigh scattering of sunlight makes the sky look blue.",
    "Vaccines expose the immune system to a harmless antigen so it learns to respond.",
    "Photosynthesis converts light, water and carbon dioxide into sugar and oxygen.",
    "Plants use photosynthesis to turn sunlight into chemical energy.",
    "Pride and Prejudice was written by Jane Austen.",
    "Jane Austen is the author of Pride and Prejudice.",
]
NEGATIVES = [
    "Passwords should be long and unique for every website.",
    "Paris is the capital of France.",
    "France is famous for its cheese and wine.",
    "Lyon is a large city in the east of France.",
    "Eggs are a good source of protein.",
    "Chickens lay eggs almost every day.",
    "K2 is the second highest mountain on Earth.",
    "Mount Everest is the highest mountain above sea level.",
    "Two-factor authentication protects accounts.",
    "Sunsets often look red or orange.",
    "The ocean looks blue partly because it reflects the sky.",
    "Antibiotics do not work against viruses.",
    "Chlorophyll makes leaves green.",
    "Roots take up water from the soil.",
    "Emma is another novel by Jane Austen.",
    "Charlotte Bronte wrote Jane Eyre.",
]
COLUMNS = (ANCHORS, POSITIVES, NEGATIVES)


def features(model: SentenceTransformer, columns: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """Tokenized columns, as the trainer hands them to a loss."""
    return [model.preprocess(list(column)) for column in columns]


def grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat(
        [p.grad.flatten() for p in model.parameters() if p.requires_grad and p.grad is not None]
    )


def run_step(
    loss: torch.nn.Module, model: SentenceTransformer, columns: Sequence[Sequence[str]], seed: int
) -> tuple[float, torch.Tensor]:
    """One forward and backward pass from fresh gradients and a fixed seed (dropout stays on)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    value = loss(features(model, columns), None)
    value.backward()
    return value.item(), grads(model)


def twin_students(model: SentenceTransformer) -> tuple[SentenceTransformer, SentenceTransformer]:
    """Two students with identical weights, in training mode (dropout on)."""
    first, second = copy.deepcopy(model), copy.deepcopy(model)
    first.train()
    second.train()
    return first, second


def relative_error(expected: torch.Tensor, actual: torch.Tensor) -> float:
    return float((expected - actual).abs().max() / expected.abs().max())


class FakeService:
    """Answers ``/info`` and ``/rerank_batch_simple`` like the bi-encoder service would."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], max_pairs: int = 100_000) -> None:
        self.embed = embed
        self.max_pairs = max_pairs
        self.bodies: list[dict[str, Any]] = []
        self.seen: set[tuple[str, str]] = set()

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(200, json=_info(self.max_pairs))
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        assert request.url.path == "/rerank_batch_simple", request.url.path
        body = json.loads(request.content)
        self.bodies.append(body)
        scores = self.scores(body["queries"], body["documents"], body["pairs"])
        hits = 0
        for q, d in body["pairs"]:
            key = (body["queries"][q], body["documents"][d])
            hits += key in self.seen
            self.seen.add(key)
        usage = {"pairs": len(scores), "cache_hits": hits}
        return httpx.Response(200, json={"model": "fake", "scores": scores, "usage": usage})

    def scores(
        self, queries: list[str], documents: list[str], pairs: list[list[int]]
    ) -> list[float]:
        """The guide's cosine similarity of each pair."""
        query_vectors, document_vectors = self.embed(queries), self.embed(documents)
        return [float(query_vectors[q] @ document_vectors[d]) for q, d in pairs]

    def sent_pairs(self) -> list[tuple[str, str]]:
        """Every (query, document) text pair scored so far, in order."""
        return [
            (body["queries"][q], body["documents"][d])
            for body in self.bodies
            for q, d in body["pairs"]
        ]

    def client(self) -> RerankerClient:
        return RerankerClient("http://fake.test", transport=httpx.MockTransport(self.handler))


class TableService(FakeService):
    """A :class:`FakeService` whose scores come from ``score(query_text, document_text)``."""

    def __init__(self, score: Callable[[str, str], float]) -> None:
        super().__init__(embed=lambda texts: np.zeros((len(texts), 1)))
        self.score = score

    def scores(
        self, queries: list[str], documents: list[str], pairs: list[list[int]]
    ) -> list[float]:
        return [self.score(queries[q], documents[d]) for q, d in pairs]


def guide_embedder(guide: SentenceTransformer) -> Callable[[list[str]], np.ndarray]:
    """Unit-length guide embeddings, so that a dot product is the cosine similarity."""

    def embed(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return guide.encode(texts, convert_to_numpy=True, normalize_embeddings=True)

    return embed


def _info(max_pairs: int) -> dict[str, Any]:
    return {
        "model": "fake",
        "family": "bi-encoder",
        "version": "0",
        "limits": {
            "max_pairs_per_request": max_pairs,
            "max_length": 256,
            "batch_max_pairs": 256,
            "batch_max_tokens": 4096,
            "batch_max_wait_ms": 5.0,
        },
    }
