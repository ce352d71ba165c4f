"""Which kind of reranker a model is, and how one (query, document) pair becomes its input.

Three families:

- ``cross-encoder``: sequence classification with one label; score = sigmoid(logit).
- ``llm-reranker``: Qwen3-Reranker format; the server writes the chat prompt and vLLM reads p(yes)
  through its sequence-classification conversion (``classifier_from_token`` no/yes).
- ``bi-encoder``: an embedding model; score = cosine similarity, instruction prefixed to the query.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any


class ModelFamily(str, Enum):
    CROSS_ENCODER = "cross-encoder"
    LLM_RERANKER = "llm-reranker"
    BI_ENCODER = "bi-encoder"


# Bumped whenever the way a family turns a pair into model input changes, so that cached scores
# from an older prompt format are never served (it is part of every cache key).
PROMPT_VERSION = {
    ModelFamily.CROSS_ENCODER: "ce-1",
    ModelFamily.LLM_RERANKER: "qwen3-1",
    ModelFamily.BI_ENCODER: "bi-1",
}

SCORE_RANGE = {
    ModelFamily.CROSS_ENCODER: "sigmoid(logit) in [0, 1]; raw_score is the logit",
    ModelFamily.LLM_RERANKER: "p(yes) in [0, 1]; raw_score is logit(yes) - logit(no)",
    ModelFamily.BI_ENCODER: "cosine similarity in [-1, 1]",
}

# The Qwen3-Reranker prompt, as published with the model.
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)

LLM_RERANKER_HF_OVERRIDES: dict[str, Any] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


def qwen3_body(instruction: str, query: str, document: str) -> str:
    """The user turn of the Qwen3-Reranker prompt. The document comes last so that cutting the
    tokenised body from the right shortens the document first and keeps the query."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def bi_encoder_query(instruction: str | None, query: str) -> str:
    return f"{instruction}{query}" if instruction else query


def _read_config(model: str) -> dict[str, Any]:
    path = Path(model) / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    # A hub id: let transformers resolve it (from the local cache when offline).
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model).to_dict()


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
