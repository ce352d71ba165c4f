from __future__ import annotations

from typing import Any

from sentence_transformers import SentenceTransformerTrainer

from .reranker_data_collator import RerankerDataCollator
from .reranker_stats_callback import RerankerStatsCallback


class RerankerTrainer(SentenceTransformerTrainer):
    """:class:`~sentence_transformers.SentenceTransformerTrainer` wired for the reranker losses.

    Two differences, both defaults that can be overridden:

    - the data collator is :class:`RerankerDataCollator` (built from the model and the training
      arguments, prompts and router mapping included), so the reranker judges the dataset's raw
      texts rather than the student's decoded token ids, which lose case, accents and emoji;
    - a :class:`RerankerStatsCallback` for the reranker losses is put first among the
      callbacks, so every integration (W&B, TensorBoard, ...) logs the reranker accounting.

    Use it only with the reranker losses (alone or in a dict): other losses would pass the raw
    texts to the model.

    Example::

        trainer = RerankerTrainer(model=model, train_dataset=train_dataset, loss=loss)
        trainer.train()
    """

    data_collator_class = RerankerDataCollator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        losses = self.loss.values() if isinstance(self.loss, dict) else [self.loss]
        reporting: list[Any] = [loss for loss in losses if hasattr(loss, "pop_log_stats")]
        if reporting and not any(
            isinstance(callback, RerankerStatsCallback)
            for callback in self.callback_handler.callbacks
        ):
            self.callback_handler.callbacks.insert(0, RerankerStatsCallback(*reporting))
