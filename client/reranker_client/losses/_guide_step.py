"""The reranker's part of one GIST step: texts in, masks and accounting out.

A step goes through four stages, each in the module named after it:

1. :mod:`._texts` - the texts of every input column, each distinct text once.
2. :mod:`.selection` - which ``(block, row, column)`` candidates to ask about; the selector
   calls the judge once per round.
3. :mod:`._judge` - the distinct text pairs scored through the service (each once per step, the
   anchors' threshold pairs with the first call) and the GIST rule applied.
4. :mod:`._masks` - the masked logits, as the loss loop applies them; :mod:`._accounting` - what
   the step cost.

Only the judge does I/O (through the client), so the rest runs without a server.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from .._client import RerankerClient
from ._accounting import RerankerStepStats
from ._candidates import Block, naive_pairs
from ._judge import GuideJudge, MarginStrategy
from ._masks import GuideMasks
from ._texts import StepTexts
from .selection import Selector


def consult_reranker(
    client: RerankerClient,
    texts: Sequence[Sequence[str]],
    columns: Sequence[Tensor],
    blocks: Sequence[Block],
    select: Selector,
    *,
    margin_strategy: MarginStrategy,
    margin: float,
    instruction: str | None,
    max_length: int | None,
    device: torch.device | str | None = None,
) -> tuple[GuideMasks, RerankerStepStats]:
    """Select, score and judge the step's candidates; return the masks and the accounting.

    ``columns`` are the student's (detached) embeddings of each input column, which the
    selector may rank candidates by.
    """
    batch_size = len(texts[0])
    step = StepTexts.of(texts)
    judge = GuideJudge(
        client,
        step,
        blocks,
        margin_strategy=margin_strategy,
        margin=margin,
        instruction=instruction,
        max_length=max_length,
    )
    before = client.stats.snapshot()
    started = time.monotonic()
    selection = select(columns, blocks, step, judge)
    spent = client.stats.snapshot() - before
    assert judge.thresholds is not None
    masks = GuideMasks.of(
        blocks, selection.candidates, selection.masked, judge.thresholds, batch_size, device=device
    )
    stats = RerankerStepStats(
        anchors=batch_size,
        naive_pairs=naive_pairs(blocks, batch_size),
        considered_pairs=batch_size + len(selection.candidates),
        sent_pairs=spent.pairs_sent,
        cache_hits=spent.cache_hits,
        requests=spent.requests,
        retries=spent.retries,
        fallbacks=spent.fallbacks,
        masked=masks.masked_candidates,
        identity_masked=judge.identity_masked,
        audit_pairs=selection.audit_pairs,
        rounds=judge.calls,
        estimated_recall=selection.estimated_recall,
        wait_seconds=time.monotonic() - started,
    )
    return masks, stats
