"""RerankerCachedGISTEmbedLoss: CachedGISTEmbedLoss with the guide model replaced by a reranker."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from typing import Any, Literal

import torch
import tqdm
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.gradcache import CachedLossMixin, has_static_embedding_input
from torch import Tensor, nn

from .._client import RerankerClient
from ._accounting import RerankerStepStats, StatsAccumulator
from ._candidates import loss_blocks
from ._failure_policy import FailurePolicy, OnError, check_service, public_url
from ._guide_step import consult_reranker
from ._masks import GuideMasks
from ._texts import extract_texts, without_raw_texts
from .selection import AllCandidates, SelectionStrategy

__all__ = ["RerankerCachedGISTEmbedLoss"]


class _StepInput:
    """What ``forward`` hands the loss step in place of labels: the texts of one step."""

    def __init__(self, texts: list[list[str]]) -> None:
        self.texts = texts
        #: The step's masks, once consulted (``MatryoshkaLoss`` calls the loss step per
        #: dimension; the reranker is asked once, with the first dimension's embeddings).
        self.masks: GuideMasks | None = None


class _SkippedStep(Exception):
    """The reranker failed and ``on_reranker_error="skip"`` skips the step."""


class RerankerCachedGISTEmbedLoss(CachedLossMixin, nn.Module):
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
        api_key: str | None = None,
        on_reranker_error: OnError = "raise",
        reranker_wait_timeout: float = 900.0,
        max_skipped_share: float = 0.1,
        check_reranker: bool = True,
        gather_across_devices: bool = False,
        mini_batch_num_tokens: int | None = None,
        selection: SelectionStrategy | None = None,
    ) -> None:
        """
        :class:`~sentence_transformers.sentence_transformer.losses.CachedGISTEmbedLoss` with the
        guide model replaced by a reranker service. In-batch negatives that the reranker scores at
        least as relevant to the anchor as the anchor's own positive are treated as false negatives
        and masked, and the Gradient Cache (https://huggingface.co/papers/2101.06983) keeps the
        memory of very large batches (1000+) bounded by the mini-batch size.

        For anchor ``i`` the threshold is the reranker's score ``t_i`` of (anchor_i, positive_i).
        A candidate of the anchor-positive (anchor_i, positive_j), anchor-anchor (anchor_i,
        anchor_j), positive-positive (positive_i, positive_j) or anchor-negative (anchor_i,
        negative_j) block is masked (its logit set to ``-inf``) when its reranker score is

            - "absolute": greater than ``t_i - margin``;
            - "relative": greater than ``t_i - abs(t_i) * margin``.

        The own positive is never masked. As in the original, where the guide's similarity of a
        text to itself is 1 and so above any threshold, the anchor-anchor and positive-positive
        entries of a text against itself are always masked; they are not sent to the reranker,
        whose score of ``(x, x)`` need not be the highest (a cross-encoder's is not).

        The reranker is asked once per step, after the first (no-gradient) embedding pass and
        before the loss is computed, never from the backward pass. Which candidates it is asked
        about is the ``selection`` strategy's choice: by default (:class:`AllCandidates`) every
        pair of the step goes through one ``client.score_pairs`` call, with each distinct text
        sent once and each distinct (query, document) pair once. (x, y) and (y, x) are different
        pairs: a reranker is not symmetric. The three GradCache steps are sentence-transformers'
        own (``CachedLossMixin``); the reranker is consulted at the start of the loss step.

        The reranker needs texts. When the batches come from
        :class:`~reranker_client.losses.RerankerDataCollator`, the loss uses the dataset's raw
        texts. Otherwise it decodes the student's input ids (``skip_special_tokens=True``), which
        is lossy: uncased tokenizers lowercase and strip accents, texts are cut at the student's
        ``max_seq_length``, unknown tokens (``[UNK]``) are dropped, and a prompt the trainer
        prepended to a column is part of the decoded text. A text that decodes to nothing is not
        sent and its pairs are never masked.

        Args:
            model: SentenceTransformer model to train.
            client: A :class:`~reranker_client.RerankerClient` of the service; its ``stats`` feed
                the per-step accounting. Give this or ``reranker_url``.
            reranker_url: Where the service listens; the loss then creates its own client.
            mini_batch_size: Mini-batch size for the forward passes and the loss computation; it
                bounds the memory used. The larger, the faster, but the more memory is used.
            reranker_batch_size: Most pairs per HTTP request (default: the server's limit). Only
                with ``reranker_url``; set it on the client otherwise.
            margin_strategy: Strategy used for false negative filtering. One of {"absolute",
                "relative"}.
            margin: The margin value for filtering negatives. Defaults to 0.0: together with the
                "absolute" strategy, this only removes negatives that the reranker rates above
                the anchor's positive.
            temperature: Temperature parameter to scale the cosine similarities.
            instruction: Task instruction sent with every pair (for instruction-following
                rerankers; a bi-encoder service prefixes it to the query).
            max_length: Per-pair token limit the service truncates to (default: the server's).
            timeout: Seconds per HTTP attempt (default: the client's). Only with ``reranker_url``.
            contrast_anchors: If True, include anchor-anchor pairs in the loss computation,
                pushing the anchors' embeddings further apart. Defaults to True, following the
                GISTEmbed paper.
            contrast_positives: If True, include positive-positive pairs in the loss computation,
                pushing the positives' embeddings further apart. Defaults to True, following the
                GISTEmbed paper, but setting it to False may yield better results in some
                retrieval tasks.
            show_progress_bar: If True, progress bars for the mini-batches and the reranker call.
            api_key: The service's API key (default: ``RERANKER_API_KEY``). Only with
                ``reranker_url``. Never logged, never in the model card.
            on_reranker_error: What a step does when the reranker call fails after the client's
                retries: "raise" (default), "wait" (retry the step's call until it succeeds or
                ``reranker_wait_timeout`` seconds have passed, e.g. through an engine reload)
                or "skip" (warn, count the step in ``skipped``, and return a zero loss; raise
                once more than ``max_skipped_share`` of the steps were skipped).
            reranker_wait_timeout: Seconds "wait" keeps retrying one step.
            max_skipped_share: Largest share of skipped steps "skip" tolerates (after 10 steps).
            check_reranker: Check ``/health`` and ``/info`` when the loss is built, failing at
                once with a clear message when the service is not reachable or not ready.
            gather_across_devices: As in sentence-transformers 6.2's CachedGISTEmbedLoss; only
                ``False`` (single process) is supported here, and ``True`` raises.
            mini_batch_num_tokens: As in sentence-transformers 6.2: cut mini-batches by this
                many tokens instead of ``mini_batch_size`` rows.
            selection: Which candidates to ask the reranker about (see
                :mod:`reranker_client.losses.selection`): :class:`AllCandidates` (default),
                :class:`RecallBudget` or :class:`PerAnchorTopK`.

        References:
            - Efficient Natural Language Response Suggestion for Smart Reply, Section 4.4:
              https://huggingface.co/papers/1705.00652
            - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup:
              https://huggingface.co/papers/2101.06983
            - GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding
              Fine-tuning: https://huggingface.co/papers/2402.16829

        Requirements:
            1. (anchor, positive) pairs or (anchor, positive, negative) triplets
            2. A running reranker service (``reranker-server``) that every training process reaches
            3. Large batch sizes, where in-batch false negatives are frequent

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
            - Pass ``data_collator=RerankerDataCollator.for_model(model, args)`` to the trainer,
              so that the reranker judges the raw texts rather than the decoded token ids.
            - Add :class:`~reranker_client.losses.RerankerStatsCallback` to see the reranker's
              per-step accounting in the training logs.
            - The plain loss asks for about ``blocks x B**2`` pairs per step (4 x 1024**2 = 4.2M
              for a batch of 1024 triplets); above a few hundred anchors, use
              :class:`~reranker_client.losses.OptimizedRerankerCachedGISTEmbedLoss` (or
              ``selection=RecallBudget()``).

        Relations:
            - Equivalent to
              :class:`~sentence_transformers.sentence_transformer.losses.CachedGISTEmbedLoss`
              when the service scores pairs with the cosine similarity of the guide model's
              embeddings (a bi-encoder service serving the guide model).
            - :class:`~reranker_client.losses.OptimizedRerankerCachedGISTEmbedLoss` is this loss
              with ``selection=RecallBudget()``: it sends only the candidates the student itself
              finds similar.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
                from reranker_client.losses import (
                    RerankerCachedGISTEmbedLoss,
                    RerankerDataCollator,
                    RerankerStatsCallback,
                )

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = RerankerCachedGISTEmbedLoss(
                    model,
                    reranker_url="http://localhost:8000",
                    mini_batch_size=64,
                    margin_strategy="absolute",  # or "relative" (e.g. margin=0.05: 95% of t)
                    margin=0.1,
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
        super().__init__()
        if has_static_embedding_input(model):
            raise ValueError(
                f"{type(self).__name__} is not compatible with a SentenceTransformer model "
                "based on a StaticEmbedding, whose inputs cannot be split into mini-batches."
            )
        # sentence-transformers' own rule for its cached losses (and its message).
        if mini_batch_num_tokens is not None and mini_batch_num_tokens <= 0:
            raise ValueError("mini_batch_num_tokens must be a positive integer or None.")
        if isinstance(client, str):  # RerankerCachedGISTEmbedLoss(model, "http://...")
            if reranker_url is not None:
                raise ValueError("Give the reranker URL once: positionally or as reranker_url.")
            client, reranker_url = None, client
        if (client is None) == (reranker_url is None):
            raise ValueError(
                "Give the reranker service as exactly one of client=RerankerClient(url) "
                "or reranker_url=url."
            )
        if client is not None and (
            reranker_batch_size is not None or timeout is not None or api_key is not None
        ):
            raise ValueError(
                "reranker_batch_size, timeout and api_key apply to the client the loss creates "
                "from reranker_url; pass them to RerankerClient(...) instead."
            )
        if margin_strategy not in ("absolute", "relative"):
            raise ValueError(
                f"margin_strategy must be 'absolute' or 'relative', got {margin_strategy!r}."
            )
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}.")
        if gather_across_devices:
            raise ValueError(
                "gather_across_devices=True is not supported: the reranker-guided losses mask "
                "in-batch candidates of one process; train with one process per loss."
            )
        if selection is None:
            selection = AllCandidates()
        if not callable(getattr(selection, "start", None)):
            raise TypeError(
                "selection must be a selection strategy: AllCandidates(), RecallBudget(...) or "
                f"PerAnchorTopK(...) from reranker_client.losses, got {selection!r}."
            )
        self.failure_policy = FailurePolicy(
            on_reranker_error, reranker_wait_timeout, max_skipped_share
        )
        if client is None:
            assert reranker_url is not None
            client_kwargs: dict[str, Any] = {
                "reranker_batch_size": reranker_batch_size,
                "api_key": api_key,
            }
            if timeout is not None:
                client_kwargs["timeout"] = timeout
            client = RerankerClient(reranker_url, **client_kwargs)
        self.reranker_url = public_url(client.base_url)
        #: What ``/info`` said about the guide (model, family, version), for the model card.
        self.reranker_info: dict[str, str] = {}
        if check_reranker:
            self.reranker_info = check_service(client)
        self.model = model
        self.client = client
        # Kept here because the trainer may swap `model` for a wrapped (DDP, compiled) model.
        self.tokenizer = getattr(model, "tokenizer", None)
        self.temperature = temperature
        self.similarity_fct = nn.CosineSimilarity(dim=-1)
        self.mini_batch_size = mini_batch_size
        self.reranker_batch_size = reranker_batch_size
        self.show_progress_bar = show_progress_bar
        self.margin_strategy = margin_strategy
        self.margin = margin
        self.instruction = instruction
        self.max_length = max_length
        self.contrast_anchors = contrast_anchors
        self.contrast_positives = contrast_positives
        self.gather_across_devices = gather_across_devices
        self.mini_batch_num_tokens = mini_batch_num_tokens
        #: The selection strategy, and the selector it started for this loss.
        self.selection = selection
        self.selector = selection.start(
            chunk_size=mini_batch_size, show_progress_bar=show_progress_bar
        )
        self.cross_entropy_loss = nn.CrossEntropyLoss()
        #: The reranker accounting of the latest step (``None`` before the first).
        self.last_step_stats: RerankerStepStats | None = None
        #: The masks the reranker decided in the latest step (``None`` before the first).
        self.last_guide_masks: GuideMasks | None = None
        self._log_stats = StatsAccumulator()

    def sim_matrix(self, embed1: Tensor, embed2: Tensor) -> Tensor:
        return self.similarity_fct(embed1.unsqueeze(1), embed2.unsqueeze(0))

    def consult_reranker(
        self, texts: list[list[str]], reps: list[list[Tensor]]
    ) -> GuideMasks | None:
        """Ask the reranker about this step's candidates and return the masks (``None``: skip)."""
        columns = [torch.cat(r).detach() for r in reps]
        blocks = loss_blocks(
            len(columns),
            contrast_anchors=self.contrast_anchors,
            contrast_positives=self.contrast_positives,
        )
        with tqdm.tqdm(
            desc="Reranker pairs",
            unit="pair",
            disable=not self.show_progress_bar,
        ) as bar:
            outcome = self.failure_policy.run(
                consult_reranker,
                self.client,
                texts,
                columns,
                blocks,
                self.selector,
                margin_strategy=self.margin_strategy,
                margin=self.margin,
                instruction=self.instruction,
                max_length=self.max_length,
                device=columns[0].device,
                training=torch.is_grad_enabled(),
            )
            if outcome is None:  # skipped by on_reranker_error="skip"
                stats = RerankerStepStats(
                    failures=self.failure_policy.last_failures,
                    skipped=1,
                    wait_seconds=self.failure_policy.last_waited,
                )
                self.last_step_stats = stats
                self._log_stats.add(stats)
                return None
            masks, stats = outcome
            stats.failures = self.failure_policy.last_failures
            stats.wait_seconds += self.failure_policy.last_waited
            bar.update(stats.considered_pairs)
            bar.set_postfix(sent=stats.sent_pairs, cache_hits=stats.cache_hits, masked=stats.masked)
        self.last_step_stats = stats
        self.last_guide_masks = masks
        if torch.is_grad_enabled():  # training steps only: evaluation has its own logs
            self._log_stats.add(stats)
        return masks

    def pop_log_stats(self, steps: int | None = None) -> dict[str, float]:
        """Per-step means of the training steps' reranker accounting since the last call.

        ``steps``: optimizer steps in the period (micro-batches of one step count as one).
        """
        return self._log_stats.pop(steps=steps)

    def calculate_loss(
        self,
        reps: list[list[Tensor]],
        labels: Any = None,
        *,
        with_backward: bool = False,
    ) -> Tensor:
        """The cross-entropy loss over the step, with the reranker's false negatives masked.

        ``labels`` is what :meth:`forward` passes through ``CachedLossMixin.forward_cached``:
        the step's texts, from which the reranker is consulted the first time it is called.
        """
        step: _StepInput = labels
        if step.masks is None:
            step.masks = self.consult_reranker(step.texts, reps)
            if step.masks is None:
                raise _SkippedStep
        guide = step.masks
        # anchors, positives, negatives...: (batch_size, dim) each
        columns = [torch.cat(r) for r in reps]
        batch_size = columns[0].size(0)
        # anchor[i] should be most similar to positive[i], so the label for anchor[i] is i.
        range_labels = torch.arange(batch_size, device=columns[0].device)

        losses: list[Tensor] = []
        for begin in tqdm.trange(
            0,
            batch_size,
            self.mini_batch_size,
            desc="Calculating loss",
            disable=not self.show_progress_bar,
        ):
            end = begin + self.mini_batch_size
            scores = []
            # Blocks in the original's order: ap, aa (contrast_anchors), pp (contrast_positives),
            # then one anchor-negative block per negative column.
            for index, block in enumerate(guide.blocks):
                sim = self.sim_matrix(
                    columns[block.query_column][begin:end], columns[block.document_column]
                )
                scores.append(guide.apply(index, sim, begin))
            scores_mbatch = torch.cat(scores, dim=1) / self.temperature  # (mbsz, num_scores)
            loss_mbatch: Tensor = (
                self.cross_entropy_loss(scores_mbatch, range_labels[begin:end])
                * len(scores_mbatch)
                / batch_size
            )
            if with_backward:
                loss_mbatch.backward()
                loss_mbatch = loss_mbatch.detach()
            losses.append(loss_mbatch)

        return sum(losses)  # type: ignore[return-value]

    def forward(
        self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None
    ) -> Tensor:
        sentence_features = list(sentence_features)
        if len(sentence_features) < 2:
            raise ValueError(
                f"{type(self).__name__} needs (anchor, positive[, negative...]) columns, "
                f"got {len(sentence_features)}."
            )
        step = _StepInput([extract_texts(feature, self.tokenizer) for feature in sentence_features])
        try:
            return self.forward_cached(
                [without_raw_texts(feature) for feature in sentence_features],
                step,  # type: ignore[arg-type]  # the loss step's input, not labels
            )
        except _SkippedStep:
            # A zero loss that reaches every parameter keeps the trainer's backward pass and
            # gradient clipping working without moving the model.
            return torch.stack(
                [p.sum() * 0.0 for p in self.model.parameters() if p.requires_grad]
            ).sum()

    def get_config_dict(self) -> dict[str, Any]:
        strategy: Any = self.selection
        # The strategy's values, for the model card (the built-in strategies are dataclasses).
        selection: dict[str, Any] = (
            asdict(strategy) if is_dataclass(strategy) and not isinstance(strategy, type) else {}
        )
        return {
            "reranker_url": self.reranker_url,
            "reranker": self.reranker_info,
            "mini_batch_size": self.mini_batch_size,
            "reranker_batch_size": self.reranker_batch_size,
            "margin_strategy": self.margin_strategy,
            "margin": self.margin,
            "temperature": self.temperature,
            "instruction": self.instruction,
            "max_length": self.max_length,
            "contrast_anchors": self.contrast_anchors,
            "contrast_positives": self.contrast_positives,
            "selection": type(self.selection).__name__,
            **selection,
        }

    @property
    def citation(self) -> str:
        return """
@misc{solatorio2024gistembed,
    title={GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding
           Fine-tuning},
    author={Aivin V. Solatorio},
    year={2024},
    eprint={2402.16829},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}
"""
