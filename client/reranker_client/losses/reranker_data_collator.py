from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

from ._texts import RAW_TEXT_KEY


@dataclass
class RerankerDataCollator(SentenceTransformerDataCollator):
    """The trainer's default collator, which also hands each text column's raw texts to the loss.

    sentence-transformers gives a loss only token ids, so a reranker-guided loss would otherwise
    decode them, which is lossy (lowercasing, truncation, unknown tokens, prompts). With this
    collator the batch carries the dataset's texts next to the ids (as
    ``{column}_reranker_text``); the reranker losses use them and remove them before the model
    sees the features. Prompts set in the training arguments are not part of these texts: the
    student's prompts are not the reranker's.

    Example::

        trainer = SentenceTransformerTrainer(
            model=model,
            train_dataset=train_dataset,
            loss=loss,
            data_collator=RerankerDataCollator(model.preprocess),
        )

    A collator given to the trainer replaces the one it would build from its arguments, so
    ``prompts`` and ``router_mapping`` set there must be given here too; :meth:`for_model` does
    that. Use it only with the reranker losses: other losses pass every feature to the model.
    """

    @classmethod
    def for_model(cls, model: Any, args: Any = None) -> RerankerDataCollator:
        """The collator the trainer would build for ``model`` and ``args``, plus the raw texts."""
        return cls(
            preprocess_fn=model.preprocess,
            router_mapping=getattr(args, "router_mapping", None) or {},
            prompts=getattr(args, "prompts", None) or {},
            max_length=getattr(args, "max_length", None),
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(features)
        if not features:
            return batch
        for column in features[0]:
            if f"{column}_input_ids" not in batch:
                continue  # labels, dataset_name, non-text columns
            values = [row[column] for row in features]
            if all(isinstance(value, str) for value in values):
                batch[f"{column}_{RAW_TEXT_KEY}"] = values
        return batch
