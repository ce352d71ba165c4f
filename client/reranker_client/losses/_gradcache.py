"""The GradCache machinery of sentence-transformers, so both passes behave as in its losses.

:class:`CachedGISTEmbedLoss` builds on these helpers; the reranker losses use the very same ones
(random-state replay, mini-batch slicing, the backward hook), so the only difference between the two
is where the false-negative masks come from.
"""

from __future__ import annotations

try:
    from sentence_transformers.base.losses.gradcache import (
        RandContext,
        _backward_hook,
        _create_minibatch,
        _minibatch_ranges,
        has_static_embedding_input,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed version
    raise ImportError(
        "reranker_client.losses needs sentence-transformers with "
        "`sentence_transformers.base.losses.gradcache` (tested with 6.2); "
        "install it with: pip install -U 'sentence-transformers[train]'"
    ) from exc

__all__ = [
    "RandContext",
    "_backward_hook",
    "_create_minibatch",
    "_minibatch_ranges",
    "has_static_embedding_input",
]
