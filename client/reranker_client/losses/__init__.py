"""Reranker-guided GIST losses for sentence-transformers (needs the ``train`` extra).

Importing this package needs ``torch`` and ``sentence-transformers``; ``import reranker_client``
does not, and never imports this package.

- :class:`RerankerCachedGISTEmbedLoss`: ``CachedGISTEmbedLoss`` with the guide model replaced by the
  reranker service (every in-batch candidate is scored).
- :class:`OptimizedRerankerCachedGISTEmbedLoss`: the same, sending the reranker only the candidates
  the student ranks highest, within a batch-scaled budget that grows to hold ``target_recall``
  (or the per-anchor presets ``conservative``, ``balanced``, ``aggressive``).
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

from ._reranker_guide import PRESETS, PrefilterConfig, RerankerStepStats
from .OptimizedRerankerCachedGISTEmbedLoss import OptimizedRerankerCachedGISTEmbedLoss
from .RerankerCachedGISTEmbedLoss import RerankerCachedGISTEmbedLoss
from .RerankerDataCollator import RerankerDataCollator
from .RerankerStatsCallback import RerankerStatsCallback
from .RerankerTrainer import RerankerTrainer

__all__ = [
    "PRESETS",
    "OptimizedRerankerCachedGISTEmbedLoss",
    "PrefilterConfig",
    "RerankerCachedGISTEmbedLoss",
    "RerankerDataCollator",
    "RerankerStatsCallback",
    "RerankerStepStats",
    "RerankerTrainer",
]
