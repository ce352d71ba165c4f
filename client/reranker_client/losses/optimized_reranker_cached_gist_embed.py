"""OptimizedRerankerCachedGISTEmbedLoss: the reranker-guided loss that sends only the likely
false negatives (``selection=RecallBudget()`` by default)."""

from __future__ import annotations

import warnings
from typing import Any

from sentence_transformers import SentenceTransformer

from .._client import RerankerClient
from ._prefilter import PRESETS, PerAnchorTopK
from ._recall_budget import RecallBudget
from .reranker_cached_gist_embed import RerankerCachedGISTEmbedLoss
from .selection import SelectionStrategy

__all__ = ["OptimizedRerankerCachedGISTEmbedLoss"]

#: Keyword arguments of the earlier API that now configure a selection strategy.
_RECALL_BUDGET_OPTIONS = (
    "target_recall",
    "budget_ratio",
    "max_budget_ratio",
    "audit_ratio",
    "expand",
)
_PER_ANCHOR_OPTIONS = (
    "similarity_threshold",
    "top_k_ratio",
    "min_top_k",
    "max_candidates",
    "hybrid_threshold",
)


class OptimizedRerankerCachedGISTEmbedLoss(RerankerCachedGISTEmbedLoss):
    def __init__(
        self,
        model: SentenceTransformer,
        client: RerankerClient | str | None = None,
        *args: Any,
        selection: SelectionStrategy | None = None,
        **kwargs: Any,
    ) -> None:
        """
        :class:`RerankerCachedGISTEmbedLoss` that sends the reranker only the likely false
        negatives. The plain loss asks about every in-batch candidate, about ``blocks x B**2``
        pairs per step; this one first ranks each anchor's candidates by the student's own cosine
        similarity, which the cached first pass computes anyway, and sends only those that might
        be false negatives. A candidate that is not sent keeps its logit (it is treated as a true
        negative); a candidate that is sent is masked exactly as in the plain loss.

        It is :class:`RerankerCachedGISTEmbedLoss` with another default ``selection``, and takes
        all of its arguments. By default (:class:`~reranker_client.losses.RecallBudget`) the
        budget scales with the batch and holds a recall:

            1. the first call scores a small random calibration sample of every block
               (``calibration_ratio`` of ``B**2``) with the anchors' own positives, which give
               every anchor's cutoff (its positive's score less the margin); candidates whose
               two texts are identical are masked without a call;
            2. each block maps the student's cosine onto the guide's scale with a linear fit,
               and all candidates of all blocks and anchors are ranked together by their chance
               to be above their anchor's cutoff; the second call sends the top of that one
               ranking, as much as ``target_recall`` of the expected false negatives needs (at
               least ``budget_ratio`` of ``blocks x B**2``), with a stratified audit sample of
               the rest (``audit_ratio``), from which the step estimates how many false
               negatives it missed (``stats.estimated_recall``);
            3. while that estimate is below ``target_recall``, further calls refit the
               calibration on every verdict back and send either the next of the refitted
               ranking or what the reranker's verdicts imply (``expand``: a false negative
               between the texts of rows i and j makes the other blocks' pairs between i and j,
               and pairs two such links apart, likely false negatives too), whichever paid more
               masked candidates per pair. All stops at ``max_budget_ratio`` of ``blocks x
               B**2`` pairs (0.03: 4% of 3B**2 for triplets); a warning says when the ceiling
               stops the step short of the target.

        ``selection=PerAnchorTopK.preset("conservative" | "balanced" | "aggressive")`` uses the
        earlier per-anchor filter instead (see :class:`~reranker_client.losses.PerAnchorTopK`);
        ``PerAnchorTopK(-1, 1, 0, None, 0)`` sends every candidate, and the loss then equals
        :class:`RerankerCachedGISTEmbedLoss`.

        Every step records its accounting in ``loss.last_step_stats`` (a
        :class:`~reranker_client.losses.RerankerStepStats`: the naive pairs, the pairs considered,
        the distinct pairs sent, the server's cache hits and the reduction);
        :class:`~reranker_client.losses.RerankerStatsCallback` adds their per-step means to the
        trainer's logs.

        Args:
            model: SentenceTransformer model to train.
            client: A :class:`~reranker_client.RerankerClient` of the service, or its URL.
            args: Further positional arguments of :class:`RerankerCachedGISTEmbedLoss`.
            selection: The selection strategy (default: ``RecallBudget()``, i.e. a
                ``target_recall`` of 0.99 within ``max_budget_ratio=0.03``).
            kwargs: Further options of :class:`RerankerCachedGISTEmbedLoss` (``mini_batch_size``,
                ``margin``, ``api_key``, ``on_reranker_error``, ...). The earlier keyword
                arguments ``target_recall``, ``budget_ratio``, ``max_budget_ratio``,
                ``audit_ratio``, ``expand`` (a :class:`RecallBudget`) and ``preset`` with
                ``similarity_threshold``, ``top_k_ratio``, ``min_top_k``, ``max_candidates``,
                ``hybrid_threshold`` (a :class:`PerAnchorTopK`) still work, with a
                ``DeprecationWarning``.

        References:
            - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup:
              https://huggingface.co/papers/2101.06983
            - GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding
              Fine-tuning: https://huggingface.co/papers/2402.16829

        Requirements:
            1. (anchor, positive) pairs or (anchor, positive, negative) triplets
            2. A running reranker service (``reranker-server``) that every training process reaches
            3. A student whose similarities already mean something (a pre-trained embedding
               model): the selection trusts it to rank the false negatives near the top

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
            - :class:`RerankerCachedGISTEmbedLoss` sends every candidate; this loss with
              ``selection=AllCandidates()`` is the same loss.
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
                    RecallBudget,
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
                    selection=RecallBudget(target_recall=0.99),
                )
                trainer = RerankerTrainer(model=model, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        legacy = {
            name: kwargs.pop(name)
            for name in (*_RECALL_BUDGET_OPTIONS, "preset", *_PER_ANCHOR_OPTIONS)
            if name in kwargs
        }
        # Checked before the base class contacts the service: a wrong call fails without it.
        if legacy:
            if selection is not None:
                raise ValueError(
                    f"Give selection=... or the earlier options ({', '.join(sorted(legacy))}), "
                    "not both; put those values into the selection strategy."
                )
            selection = _selection_from_legacy(legacy)
        kwargs["selection"] = selection or RecallBudget()
        super().__init__(model, client, *args, **kwargs)


def _selection_from_legacy(options: dict[str, Any]) -> SelectionStrategy:
    """The selection strategy the earlier keyword arguments meant, with a DeprecationWarning."""
    given = ", ".join(f"{name}=..." for name in options)
    preset = options.pop("preset", None)
    per_anchor = {k: v for k, v in options.items() if k in _PER_ANCHOR_OPTIONS}
    recall = {k: v for k, v in options.items() if k in _RECALL_BUDGET_OPTIONS}
    selection: SelectionStrategy
    if preset is None:
        if per_anchor:
            raise ValueError(
                f"{', '.join(sorted(per_anchor))} belong to the per-anchor presets; pass "
                "selection=PerAnchorTopK.preset('conservative' | 'balanced' | 'aggressive', ...) "
                "with them, or use the default batch-scaled budget (selection=RecallBudget("
                "budget_ratio=..., max_budget_ratio=..., target_recall=...))."
            )
        selection = RecallBudget(**recall)
        replacement = f"selection=RecallBudget({_call_args(recall)})"
    else:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}.")
        if recall:
            raise ValueError(
                f"{', '.join(sorted(recall))} configure the default batch-scaled budget, which "
                f"preset={preset!r} replaces; drop them or drop the preset."
            )
        selection = PerAnchorTopK.preset(preset, **per_anchor)
        args = _call_args(per_anchor)
        replacement = f"selection=PerAnchorTopK.preset({preset!r}{', ' if args else ''}{args})"
    warnings.warn(
        f"OptimizedRerankerCachedGISTEmbedLoss({given}) is deprecated; pass {replacement} instead.",
        DeprecationWarning,
        stacklevel=3,
    )
    return selection


def _call_args(options: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in options.items())
