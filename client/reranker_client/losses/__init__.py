"""Reranker-guided GIST losses for sentence-transformers (needs the ``train`` extra).

Importing this package needs ``torch`` and ``sentence-transformers``; ``import reranker_client``
does not, and never imports this package.

- :class:`RerankerCachedGISTEmbedLoss`: ``CachedGISTEmbedLoss`` with the guide model replaced by the
  reranker service (every in-batch candidate is scored).
- :class:`OptimizedRerankerCachedGISTEmbedLoss`: the same, sending the reranker only the candidates
  the student ranks highest (``selection=RecallBudget()``: a batch-scaled budget that grows to
  hold ``target_recall``).
- Selection strategies (:mod:`.selection`), the ``selection=`` of either loss:
  :class:`AllCandidates`, :class:`RecallBudget`, :class:`PerAnchorTopK` (with the presets
  ``conservative``, ``balanced``, ``aggressive`` of :data:`PRESETS`).
- :class:`RerankerTrainer`: the sentence-transformers trainer with the collator below and the
  stats callback as defaults (the raw-texts path).
- :class:`RerankerDataCollator`: gives the losses the raw texts instead of decoded token ids.
- :class:`RerankerStatsCallback`: puts the per-step reranker accounting in the trainer's logs.
"""

try:
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "reranker_client.losses needs torch and sentence-transformers: "
        "pip install 'reranker-service[train]'"
    ) from exc

from ._accounting import RerankerStepStats
from .optimized_reranker_cached_gist_embed import OptimizedRerankerCachedGISTEmbedLoss
from .reranker_cached_gist_embed import RerankerCachedGISTEmbedLoss
from .reranker_data_collator import RerankerDataCollator
from .reranker_stats_callback import RerankerStatsCallback
from .reranker_trainer import RerankerTrainer
from .selection import PRESETS, AllCandidates, PerAnchorTopK, RecallBudget

#: The earlier name of :class:`PerAnchorTopK`.
PrefilterConfig = PerAnchorTopK

__all__ = [
    "PRESETS",
    "AllCandidates",
    "OptimizedRerankerCachedGISTEmbedLoss",
    "PerAnchorTopK",
    "PrefilterConfig",
    "RecallBudget",
    "RerankerCachedGISTEmbedLoss",
    "RerankerDataCollator",
    "RerankerStatsCallback",
    "RerankerStepStats",
    "RerankerTrainer",
]
