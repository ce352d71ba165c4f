from __future__ import annotations

import enum
from functools import partial
from typing import Any, Literal

import tqdm
from sentence_transformers import SentenceTransformer
from torch import Tensor

from .._client import RerankerClient
from ._reranker_guide import PRESETS, Block, Candidates, PrefilterConfig, prefilter_candidates
from .RerankerCachedGISTEmbedLoss import RerankerCachedGISTEmbedLoss


class _FromPreset(enum.Enum):
    """Default of the filter parameters: take the value from ``preset``."""

    VALUE = "from preset"

    def __repr__(self) -> str:
        return "FROM_PRESET"


FROM_PRESET = _FromPreset.VALUE


class OptimizedRerankerCachedGISTEmbedLoss(RerankerCachedGISTEmbedLoss):
    def __init__(
        self,
        model: SentenceTransformer,
        client: RerankerClient | None = None,
        reranker_url: str | None = None,
        mini_batch_size: int = 32,
        reranker_batch_size: int | None = None,
        margin_strategy: Literal["absolute", "relative"] = "absolute",
        margin: float = 0.0,
        temperature: float = 0.01,
        instruction: str | None = None,
        max_length: int | None = None,
        timeout: float | None = None,
        contrast_anchors: bool = True,
        contrast_positives: bool = True,
        show_progress_bar: bool = False,
        preset: Literal["conservative", "balanced", "aggressive"] = "balanced",
        similarity_threshold: float | _FromPreset = FROM_PRESET,
        top_k_ratio: float | _FromPreset = FROM_PRESET,
        min_top_k: int | _FromPreset = FROM_PRESET,
        max_candidates: int | None | _FromPreset = FROM_PRESET,
        hybrid_threshold: float | _FromPreset = FROM_PRESET,
    ) -> None:
        """
        :class:`RerankerCachedGISTEmbedLoss` that sends the reranker only the likely false
        negatives. The plain loss asks about every in-batch candidate, about ``blocks x B**2``
        pairs per step; this one first ranks each anchor's candidates by the student's own cosine
        similarity, which the cached first pass computes anyway, and sends only those that might
        be false negatives. A candidate that is not sent keeps its logit (it is treated as a true
        negative); a candidate that is sent is masked exactly as in the plain loss.

        For every anchor, the candidates of all blocks in use (anchor-positive, anchor-anchor,
        positive-positive, anchor-negative) are pooled and filtered:

            1. ``similarity_threshold``: a student cosine below it marks a clear negative, which
               is never sent;
            2. ``hybrid_threshold``: a candidate is sent only when its student similarity exceeds
               ``hybrid_threshold`` times the anchor's student similarity to its own positive
               (0 turns this filter off);
            3. of the survivors, the ``max(min_top_k, ceil(top_k_ratio x C))`` most similar are
               kept, ``C`` being the candidates in the anchor's row, and at most
               ``max_candidates``.

        The anchor's threshold pair (anchor_i, positive_i) is always sent. With
        ``similarity_threshold=-1, top_k_ratio=1, max_candidates=None, hybrid_threshold=0`` every
        candidate is sent and the loss equals :class:`RerankerCachedGISTEmbedLoss`.

        Presets (explicit arguments override single values; columns in the order
        similarity_threshold / top_k_ratio / min_top_k / max_candidates / hybrid_threshold):

            ============  =====  =====  ===  ===  ===
            conservative  0.2    0.2    20   200  0.4
            balanced      0.3    0.1    10   100  0.5
            aggressive    0.4    0.05   5    50   0.6
            ============  =====  =====  ===  ===  ===

        Every step records its accounting in ``loss.last_step_stats`` (a
        :class:`~reranker_client.losses.RerankerStepStats`: the naive pairs, the pairs considered
        after the pre-filter, the distinct pairs sent, the server's cache hits and the
        reduction); :class:`~reranker_client.losses.RerankerStatsCallback` adds their per-step
        means to the trainer's logs.

        Args:
            model: SentenceTransformer model to train.
            client: A :class:`~reranker_client.RerankerClient` of the service. Give this or
                ``reranker_url``.
            reranker_url: Where the service listens; the loss then creates its own client.
            mini_batch_size: Mini-batch size for the forward passes, the pre-filter and the loss
                computation; it bounds the memory used.
            reranker_batch_size: Most pairs per HTTP request (default: the server's limit). Only
                with ``reranker_url``.
            margin_strategy: Strategy used for false negative filtering. One of {"absolute",
                "relative"}.
            margin: The margin value for filtering negatives (as in
                :class:`RerankerCachedGISTEmbedLoss`).
            temperature: Temperature parameter to scale the cosine similarities.
            instruction: Task instruction sent with every pair.
            max_length: Per-pair token limit the service truncates to (default: the server's).
            timeout: Seconds per HTTP attempt (default: the client's). Only with ``reranker_url``.
            contrast_anchors: If True, include anchor-anchor pairs in the loss computation.
            contrast_positives: If True, include positive-positive pairs in the loss computation.
            show_progress_bar: If True, progress bars for the mini-batches, the pre-filter and the
                reranker call (with the step's accounting).
            preset: Where the filter values not given explicitly come from: "conservative" (sends
                the most), "balanced" or "aggressive" (sends the fewest).
            similarity_threshold: Student cosine below which a candidate is never sent (-1: none).
            top_k_ratio: Share of an anchor's candidates to keep, in (0, 1].
            min_top_k: Fewest candidates to keep per anchor (when that many pass the thresholds).
            max_candidates: Most candidates per anchor, after the thresholds (``None``: no cap).
            hybrid_threshold: Threshold relative to the anchor's similarity to its positive
                (0: off).

        References:
            - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup:
              https://huggingface.co/papers/2101.06983
            - GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding
              Fine-tuning: https://huggingface.co/papers/2402.16829

        Requirements:
            1. (anchor, positive) pairs or (anchor, positive, negative) triplets
            2. A running reranker service (``reranker-server``) that every training process reaches
            3. A student whose similarities already mean something (a pre-trained embedding
               model): the pre-filter trusts it to rank the false negatives near the top

        Inputs:
            +-------------------------------------------------+--------+
            | Inputs                                          | Labels |
            +=================================================+========+
            | (anchor, positive) pairs                        | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative) triplets           | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative_1, ..., negative_n) | none   |
            +-------------------------------------------------+--------+

        Recommendations:
            - Start with "balanced"; ``bench/loss_bill.py`` shows, on data like yours, how many
              pairs each preset sends and what share of the plain loss's false negatives it
              still masks.
            - Pass ``data_collator=RerankerDataCollator.for_model(model, args)`` to the trainer
              so that the reranker judges raw texts, and add ``RerankerStatsCallback(loss)`` to
              log the accounting.

        Relations:
            - :class:`RerankerCachedGISTEmbedLoss` sends every candidate; this loss with all
              filters opened up is equivalent to it.
            - Like
              :class:`~sentence_transformers.sentence_transformer.losses.CachedGISTEmbedLoss`,
              but guided by a reranker service, and only for the candidates the student finds
              similar.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
                from reranker_client.losses import (
                    OptimizedRerankerCachedGISTEmbedLoss,
                    RerankerDataCollator,
                    RerankerStatsCallback,
                )

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = OptimizedRerankerCachedGISTEmbedLoss(
                    model,
                    reranker_url="http://localhost:8000",
                    mini_batch_size=64,
                    preset="balanced",
                    max_candidates=50,  # overrides the preset's 100
                )

                trainer = SentenceTransformerTrainer(
                    model=model,
                    train_dataset=train_dataset,
                    loss=loss,
                    data_collator=RerankerDataCollator(model.preprocess),
                    callbacks=[RerankerStatsCallback(loss)],
                )
                trainer.train()
        """
        super().__init__(
            model,
            client=client,
            reranker_url=reranker_url,
            mini_batch_size=mini_batch_size,
            reranker_batch_size=reranker_batch_size,
            margin_strategy=margin_strategy,
            margin=margin,
            temperature=temperature,
            instruction=instruction,
            max_length=max_length,
            timeout=timeout,
            contrast_anchors=contrast_anchors,
            contrast_positives=contrast_positives,
            show_progress_bar=show_progress_bar,
        )
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
        base = PRESETS[preset]
        self.preset = preset
        self.prefilter = PrefilterConfig(
            similarity_threshold=_pick(similarity_threshold, base.similarity_threshold),
            top_k_ratio=_pick(top_k_ratio, base.top_k_ratio),
            min_top_k=_pick(min_top_k, base.min_top_k),
            max_candidates=_pick(max_candidates, base.max_candidates),
            hybrid_threshold=_pick(hybrid_threshold, base.hybrid_threshold),
        )

    def select_candidates(self, columns: list[Tensor], blocks: list[Block]) -> Candidates:
        """The candidates that pass the student-similarity pre-filter."""
        return prefilter_candidates(
            columns,
            blocks,
            self.prefilter,
            chunk_size=self.mini_batch_size,
            progress=partial(
                tqdm.tqdm, desc="Pre-filtering candidates", disable=not self.show_progress_bar
            ),
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {
            **super().get_config_dict(),
            "preset": self.preset,
            "similarity_threshold": self.prefilter.similarity_threshold,
            "top_k_ratio": self.prefilter.top_k_ratio,
            "min_top_k": self.prefilter.min_top_k,
            "max_candidates": self.prefilter.max_candidates,
            "hybrid_threshold": self.prefilter.hybrid_threshold,
        }


def _pick(value: Any, default: Any) -> Any:
    return default if value is FROM_PRESET else value
