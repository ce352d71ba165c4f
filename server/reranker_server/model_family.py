"""Which kind of reranker a model is, and the base of the family objects that know how to score it.

Three families, one module each:

- ``cross-encoder`` (``cross_encoder``): sequence classification with one label;
  score = sigmoid(logit).
- ``llm-reranker`` (``llm_reranker``): Qwen3-Reranker format; the server writes the chat prompt
  and vLLM reads p(yes) through its sequence-classification conversion (``classifier_from_token``
  no/yes).
- ``bi-encoder`` (``bi_encoder``): an embedding model; score = cosine similarity, instruction
  prefixed to the query.

A family is chosen once, when the backend is made (``family_class``: what is known from the
config alone, such as the score range and the default instruction), and instantiated by the
backend once the engine's tokenizer is loaded. The backend then runs one pipeline for every
family: ``engine_order`` -> ``encode`` -> ``call_engine`` -> ``read_out``.
"""

from __future__ import annotations

import json
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np

from .scoring import GroupKey, Pair, Score

if TYPE_CHECKING:
    from .settings import Settings


class ModelFamily(str, Enum):
    """The family names: the one place they are written (settings and the CLI derive theirs)."""

    CROSS_ENCODER = "cross-encoder"
    LLM_RERANKER = "llm-reranker"
    BI_ENCODER = "bi-encoder"


#: What ``RERANKER_MODEL_FAMILY`` and ``--model-family`` accept.
FAMILY_CHOICES: tuple[str, ...] = ("auto", *(f.value for f in ModelFamily))


@dataclass
class ClassifyInput:
    """A batch for a classifying engine call: one token sequence per pair (``prompts``).

    A cross-encoder whose tokenizer has token types also gives ``segment_starts`` (where the
    document segment begins) and ``cut_pairs`` (the pair cut to fit, as text, for engines that
    take text only)."""

    prompts: list[list[int]]
    segment_starts: list[int] | None = None
    cut_pairs: list[Pair] | None = None


#: Embed each tokenised text; one vector per text.
EmbedFn = Callable[[list[list[int]]], Awaitable[list[np.ndarray]]]
#: One raw logit per prompt of the batch.
ClassifyFn = Callable[[ClassifyInput], Awaitable[list[float]]]


@dataclass(frozen=True)
class EngineCalls:
    """The two engine calls a backend offers; each family uses one of them."""

    embed: EmbedFn
    classify: ClassifyFn


E = TypeVar("E")  # a family's encoded batch
R = TypeVar("R")  # what its engine call answers


class Family(ABC, Generic[E, R]):
    """One model family with one model's tokenizer: format, encode, call the engine, read out.

    Class attributes are known before the model loads (``/info`` reports them while loading);
    the instance holds the tokenizer. Tokenisation is thread-safe (``encode`` and
    ``tokenize_texts`` run on worker threads)."""

    kind: ClassVar[ModelFamily]
    #: Bumped whenever the way a pair becomes model input changes, so that cached scores from an
    #: older format are never served (it is part of every cache key).
    prompt_version: ClassVar[str]
    score_range: ClassVar[str]
    #: The instruction used when a request gives none (None: the family takes none by default).
    default_instruction: ClassVar[str | None] = None
    #: ``hf_overrides`` the engine must load the model with.
    hf_overrides: ClassVar[dict[str, Any]] = {}
    #: The KV-cache block size (tokens) of the CPU engine, if not vLLM's default; the
    #: ``RERANKER_KV_BLOCK_SIZE`` setting wins.
    cpu_kv_block_size: ClassVar[int | None] = None

    def __init__(self, settings: Settings, tokenizer: Any) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        # A fast tokenizer's truncation settings are state of the one Rust object, set on each
        # call: two batches tokenised at once on two threads would race on them.
        self._lock = threading.Lock()
        #: The smallest max_length this family's input format fits in.
        self.min_length = 2

    @classmethod
    def instruction_of(cls, requested: str | None) -> str | None:
        """The instruction a request's pairs are scored (and grouped, and cached) under."""
        return requested or cls.default_instruction

    def engine_order(self, pairs: Sequence[Pair]) -> list[int] | None:
        """The order to hand the pairs to the engine in, or None for as they came."""
        return None

    def encode(self, key: GroupKey, pairs: Sequence[Pair]) -> E:
        """The batch's engine input; each pair encoded on its own terms (thread-safe)."""
        with self._lock:
            return self._encode(key, pairs)

    @abstractmethod
    def _encode(self, key: GroupKey, pairs: Sequence[Pair]) -> E: ...

    @abstractmethod
    async def call_engine(self, key: GroupKey, encoded: E, engine: EngineCalls) -> R:
        """Run the encoded batch through the engine."""

    @abstractmethod
    def read_out(self, encoded: E, answer: R) -> list[Score]:
        """One score per pair of the batch, in the encoded order."""

    def embedding_cache_bytes(self) -> int:
        """Memory held by the family's text-embedding cache (none by default)."""
        return 0

    def tokenize_texts(self, max_length: int, texts: Sequence[str]) -> list[list[int]]:
        """Each text on its own, cut to max_length tokens (bi-encoder input; usage counts)."""
        if not texts:
            return []
        with self._lock:
            enc = self.tokenizer(list(texts), truncation=True, max_length=max_length)
        return list(enc["input_ids"])


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class ClassifierFamily(Family[ClassifyInput, list[float]]):
    """Families scored by one classify call per batch: relevance = sigmoid(raw logit)."""

    async def call_engine(
        self, key: GroupKey, encoded: ClassifyInput, engine: EngineCalls
    ) -> list[float]:
        return await engine.classify(encoded)

    def read_out(self, encoded: ClassifyInput, answer: list[float]) -> list[Score]:
        return [Score(relevance=sigmoid(x), raw=float(x)) for x in answer]


def _read_config(model: str) -> dict[str, Any]:
    path = Path(model) / "config.json"
    if path.is_file():
        config: dict[str, Any] = json.loads(path.read_text())
        return config
    # A hub id: let transformers resolve it (from the local cache when offline).
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model).to_dict()  # type: ignore[no-any-return]


def detect_family(model: str, config: dict[str, Any] | None = None) -> ModelFamily:
    """Guess the family from the model's config.json (override with ``RERANKER_MODEL_FAMILY``)."""
    config = config if config is not None else _read_config(model)
    architectures = config.get("architectures") or []
    name = model.lower()
    if (
        any(a.endswith("ForCausalLM") for a in architectures)
        or "reranker" in name
        and any("qwen" in a.lower() for a in architectures)
    ):
        return ModelFamily.LLM_RERANKER
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
        if labels != 1:
            raise ValueError(
                f"{model} is a classifier with {labels} labels; a cross-encoder reranker has one. "
                "Set RERANKER_MODEL_FAMILY if the detection is wrong."
            )
        return ModelFamily.CROSS_ENCODER
    return ModelFamily.BI_ENCODER


def family_class(kind: ModelFamily) -> type[Family[Any, Any]]:
    """The class of a family (imported here, not at the top: the family modules import this)."""
    from .bi_encoder import BiEncoder
    from .cross_encoder import CrossEncoder
    from .llm_reranker import LlmReranker

    classes: dict[ModelFamily, type[Family[Any, Any]]] = {
        ModelFamily.CROSS_ENCODER: CrossEncoder,
        ModelFamily.LLM_RERANKER: LlmReranker,
        ModelFamily.BI_ENCODER: BiEncoder,
    }
    return classes[ModelFamily(kind)]


def configured_family(settings: Settings) -> type[Family[Any, Any]]:
    """The family of the configured model: ``RERANKER_MODEL_FAMILY``, or detected when auto."""
    if settings.model_family == "auto":
        return family_class(detect_family(settings.model))
    return family_class(ModelFamily(settings.model_family))
