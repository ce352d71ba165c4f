from __future__ import annotations

import enum
import math
from functools import partial
from typing import Any, Literal

import tqdm
from sentence_transformers import SentenceTransformer
from torch import Tensor

from .._client import RerankerClient
from ._candidate_budget import BudgetConfig, CandidateBudget
from ._reranker_guide import (
    PRESETS,
    Block,
    GuideJudge,
    PrefilterConfig,
    Selection,
    StepTexts,
    judge_all,
    prefilter_candidates,
)
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
        client: RerankerClient | str | None = None,
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
        target_recall: float | None = 0.99,
        budget_ratio: float = 0.004,
        max_budget_ratio: float = 0.015,
        audit_ratio: float = 0.0005,
        expand: bool = True,
        preset: Literal["conservative", "balanced", "aggressive"] | None = None,
        similarity_threshold: float | _FromPreset = FROM_PRESET,
        top_k_ratio: float | _FromPreset = FROM_PRESET,
        min_top_k: int | _FromPreset = FROM_PRESET,
        max_candidates: int | None | _FromPreset = FROM_PRESET,
        hybrid_threshold: float | _FromPreset = FROM_PRESET,
        **options: Any,
    ) -> None:
        """
        :class:`RerankerCachedGISTEmbedLoss` that sends the reranker only the likely false
        negatives. The plain loss asks about every in-batch candidate, about ``blocks x B**2``
        pairs per step; this one first ranks each anchor's candidates by the student's own cosine
        similarity, which the cached first pass computes anyway, and sends only those that might
        be false negatives. A candidate that is not sent keeps its logit (it is treated as a true
        negative); a candidate that is sent is masked exactly as in the plain loss.

        By default (``preset=None``) the budget scales with the batch and holds a recall:

            1. every block (anchor-positive, anchor-anchor, positive-positive, anchor-negative)
               ranks its ``B**2`` candidates by ``cos(query_i, document_j) - cos(anchor_i,
               positive_i)`` (how much closer the candidate is than the anchor's own positive)
               and sends its own budget's worth from the top, ``budget_ratio`` of ``B**2`` to
               start, so no block crowds out another;
            2. candidates whose two texts are identical are masked without a call;
            3. a random audit sample (``audit_ratio`` of ``B**2`` per block) of the candidates
               not sent, drawn from bands of the ranking, is scored too; from it the step
               estimates how many false negatives it missed (``stats.estimated_recall``);
            4. while that estimate is below ``target_recall``, the step asks about what the
               reranker's verdicts imply (``expand``): a false negative between the texts of
               rows i and j makes the other blocks' pairs between i and j, and pairs two such
               links apart, likely false negatives too, however the student ranks them; these
               are sent in further ``score_pairs`` calls while new links appear. When they run
               out, the block with the most estimated misses sends its next band. All stops at
               ``max_budget_ratio`` of ``blocks x B**2`` pairs; the next step starts from the
               band budget this one needed, per block, and shrinks it slowly when it was more
               than enough. A warning says when the ceiling stops the budget short of the target.

        With ``preset=...`` the earlier per-anchor filter is used instead: for every anchor, the
        candidates of all blocks are pooled and filtered:

            1. ``similarity_threshold``: a student cosine below it marks a clear negative, which
               is never sent;
            2. ``hybrid_threshold``: a candidate is sent only when its student similarity exceeds
               ``hybrid_threshold`` times the anchor's student similarity to its own positive
               (0 turns this filter off);
            3. of the survivors, the ``max(min_top_k, ceil(top_k_ratio x C))`` most similar are
               kept, ``C`` being the candidates in the anchor's row, and at most
               ``max_candidates`` (which binds for B above about 1000).

        The anchor's threshold pair (anchor_i, positive_i) is always sent. With
        ``preset="balanced", similarity_threshold=-1, top_k_ratio=1, max_candidates=None,
        hybrid_threshold=0`` every candidate is sent and the loss equals
        :class:`RerankerCachedGISTEmbedLoss`.

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
            target_recall: The default selection grows a step's budget, in further calls, until
                its estimated recall reaches this (``None``: never grow).
            budget_ratio: The default selection's starting share of each block's ``B**2``
                candidates; each block's share then follows what the previous steps needed.
            max_budget_ratio: Most pairs a step sends, as a share of ``blocks x B**2``
                (0.015 x 4B^2 is 2% of 3B^2).
            audit_ratio: Audit sample per block, as a share of ``B**2``, that estimates the misses.
            expand: Whether the default selection sends the candidates implied by the false
                negatives it found (guide-verified expansion) before growing a band.
            options: Further options of :class:`RerankerCachedGISTEmbedLoss` (``api_key``,
                ``on_reranker_error``, ``check_reranker``, ``mini_batch_num_tokens``, ...).

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
            - Start with the defaults and watch ``reranker_estimated_recall`` in the logs; a
              student that ranks poorly (a weak or untrained one) will not reach the target
              within ``max_budget_ratio``. ``bench/loss_bill.py`` shows, on data like its own,
              how many pairs each mode sends and what share of the false negatives it keeps.
            - Train with :class:`~reranker_client.losses.RerankerTrainer`, so that the
              reranker judges raw texts and the accounting is logged.

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
                from sentence_transformers import SentenceTransformer
                from reranker_client.losses import (
                    OptimizedRerankerCachedGISTEmbedLoss,
                    RerankerTrainer,
                )

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = OptimizedRerankerCachedGISTEmbedLoss(
                    model,
                    "http://localhost:8000",
                    mini_batch_size=64,
                    target_recall=0.99,
                )
                trainer = RerankerTrainer(model=model, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        row_options = {
            "similarity_threshold": similarity_threshold,
            "top_k_ratio": top_k_ratio,
            "min_top_k": min_top_k,
            "max_candidates": max_candidates,
            "hybrid_threshold": hybrid_threshold,
        }
        # Checked before the base class contacts the service: a wrong call fails without it.
        budget: CandidateBudget | None = None
        prefilter: PrefilterConfig | None = None
        if preset is None:
            given = sorted(name for name, value in row_options.items() if value is not FROM_PRESET)
            if given:
                raise ValueError(
                    f"{', '.join(given)} belong to the per-anchor presets; pass "
                    "preset='conservative' | 'balanced' | 'aggressive' with them, or use the "
                    "default batch-scaled budget (budget_ratio, max_budget_ratio, target_recall)."
                )
            budget = CandidateBudget(
                BudgetConfig(
                    budget_ratio=budget_ratio,
                    max_budget_ratio=max_budget_ratio,
                    target_recall=target_recall,
                    audit_ratio=audit_ratio,
                    expand=expand,
                )
            )
        elif preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}.")
        else:
            base = PRESETS[preset]
            prefilter = PrefilterConfig(
                **{name: _pick(value, getattr(base, name)) for name, value in row_options.items()}
            )

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
            **options,
        )
        self.preset = preset
        self.budget = budget
        self.prefilter = prefilter

    def select(
        self, columns: list[Tensor], blocks: list[Block], step: StepTexts, judge: GuideJudge
    ) -> Selection:
        """The batch-scaled budget (default) or the preset's per-anchor pre-filter."""
        if self.budget is not None:
            return self.budget.run(columns, step.ids, blocks, judge)
        assert self.prefilter is not None
        candidates = prefilter_candidates(
            columns,
            blocks,
            self.prefilter,
            chunk_size=self.mini_batch_size,
            progress=partial(
                tqdm.tqdm, desc="Pre-filtering candidates", disable=not self.show_progress_bar
            ),
        )
        return judge_all(candidates, judge, estimated_recall=math.nan)

    def get_config_dict(self) -> dict[str, Any]:
        config = {**super().get_config_dict(), "preset": self.preset}
        if self.budget is not None:
            budget = self.budget.config
            config.update(
                target_recall=budget.target_recall,
                budget_ratio=budget.budget_ratio,
                max_budget_ratio=budget.max_budget_ratio,
                audit_ratio=budget.audit_ratio,
                expand=budget.expand,
            )
        if self.prefilter is not None:
            config.update(
                similarity_threshold=self.prefilter.similarity_threshold,
                top_k_ratio=self.prefilter.top_k_ratio,
                min_top_k=self.prefilter.min_top_k,
                max_candidates=self.prefilter.max_candidates,
                hybrid_threshold=self.prefilter.hybrid_threshold,
            )
        return config


def _pick(value: Any, default: Any) -> Any:
    return default if value is FROM_PRESET else value
