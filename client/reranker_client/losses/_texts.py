"""The texts of a step: where they come from, each distinct text once, and when two are identical.

The reranker judges texts, not token ids. A batch from
:class:`~reranker_client.losses.RerankerDataCollator` carries the dataset's raw texts under
:data:`RAW_TEXT_KEY`; otherwise the student's input ids are decoded, which is lossy.

:class:`StepTexts` gives every distinct string of the step one id, so that each text is sent once
and two texts are identical exactly when their ids are equal (:func:`identical`): the one
definition every part of the losses uses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

#: Feature key under which :class:`~reranker_client.losses.RerankerDataCollator` passes a column's
#: raw texts to the loss (the loss removes it before the model sees the features).
RAW_TEXT_KEY = "reranker_text"

_warned_decoding = False

Ids = TypeVar("Ids")


def extract_texts(feature: Mapping[str, Any], tokenizer: Any) -> list[str]:
    """Return the texts of one input column: the raw texts if carried, else the decoded ids.

    Decoding (``skip_special_tokens=True``) returns what the student saw, not what the dataset
    held: lowercased and accent-stripped by uncased tokenizers, cut at ``max_seq_length``, with
    unknown tokens dropped, and with any prompt the trainer prepended.
    """
    raw = feature.get(RAW_TEXT_KEY)
    if raw is not None:
        return [str(text) for text in raw]
    if tokenizer is None:
        raise ValueError(
            "The model has no tokenizer to decode the inputs with; give the loss the raw texts "
            "with data_collator=RerankerDataCollator(model.preprocess)."
        )
    _warn_decoding_once()
    input_ids = feature["input_ids"]
    if "cu_seq_lens_q" in feature:
        # Flattened inputs (DataCollatorWithFlattening): one row holding every sequence.
        flat = input_ids[0].tolist()
        bounds = feature["cu_seq_lens_q"].tolist()
        input_ids = [flat[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
    return list(tokenizer.batch_decode(input_ids, skip_special_tokens=True))


def without_raw_texts(feature: Mapping[str, Any]) -> dict[str, Any]:
    """The features the model may see: everything but :data:`RAW_TEXT_KEY`."""
    return {key: value for key, value in feature.items() if key != RAW_TEXT_KEY}


def identical(query_ids: Ids, document_ids: Ids) -> Ids:
    """Whether the two texts of each pair are identical, from their :class:`StepTexts` ids.

    Identical means the same string (no normalisation): :meth:`StepTexts.of` gives each distinct
    string one id. Such a pair is never sent; the reranker's score of ``(x, x)`` need not be its
    highest, and a text is never its own negative, so it is masked by identity (see
    :meth:`StepTexts.masked_by_identity`). Works on numpy arrays and torch tensors alike.
    """
    return query_ids == document_ids  # type: ignore[return-value]


@dataclass
class StepTexts:
    """The distinct texts of one step (each once) and every column as ids into them."""

    texts: list[str]
    ids: list[np.ndarray]
    #: Per text id: whether the text is empty after stripping (never scored, never masked).
    empty: np.ndarray

    @classmethod
    def of(cls, texts: Sequence[Sequence[str]]) -> StepTexts:
        vocabulary: dict[str, int] = {}
        ids = [
            np.fromiter((vocabulary.setdefault(t, len(vocabulary)) for t in column), dtype=np.int64)
            for column in texts
        ]
        vocab = list(vocabulary)
        empty = np.fromiter((not t.strip() for t in vocab), dtype=bool, count=len(vocab))
        return cls(vocab, ids, empty)

    def masked_by_identity(self, query_ids: np.ndarray, document_ids: np.ndarray) -> np.ndarray:
        """Pairs masked without a call: :func:`identical` texts, unless empty (never masked)."""
        return identical(query_ids, document_ids) & ~self.empty[query_ids]


def _warn_decoding_once() -> None:
    global _warned_decoding
    if not _warned_decoding:
        _warned_decoding = True
        logger.warning(
            "The batch carries no raw texts, so the reranker judges the student's decoded token "
            "ids, which may lose case, accents, emoji and length. Train with RerankerTrainer "
            "(or data_collator=RerankerDataCollator.for_model(model, args)) to send raw texts."
        )
