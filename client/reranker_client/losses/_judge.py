"""The judge: scores a step's candidates through the service and applies the GIST rule.

For anchor ``i`` the threshold is the reranker's score ``t_i`` of (anchor_i, positive_i); a
candidate of row ``i`` is a false negative, and masked, when its score is above ``t_i - margin``
(absolute) or ``t_i - |t_i| * margin`` (relative). A selection strategy calls the judge once per
round and gets back a :class:`Selection`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._client import RerankerClient
from ._candidates import Block, Candidates
from ._sorted_keys import in_sorted, merge_sorted_values
from ._texts import StepTexts

logger = logging.getLogger(__name__)

MarginStrategy = Literal["absolute", "relative"]

_warned_empty_texts = False


def gist_rule(
    scores: np.ndarray, thresholds: np.ndarray, margin_strategy: MarginStrategy, margin: float
) -> np.ndarray:
    """Which candidate scores are above their anchor's threshold (NaN never is)."""
    if margin_strategy == "absolute":
        return scores > thresholds - margin
    if margin_strategy == "relative":
        return scores > thresholds - np.abs(thresholds) * margin
    raise ValueError(f"margin_strategy must be 'absolute' or 'relative', got {margin_strategy!r}")


class GuideJudge:
    """Scores candidates through the service and applies the GIST rule, for one step.

    Each distinct ``(query, document)`` text pair is scored at most once per step, however many
    calls the step makes; the anchors' threshold pairs go with the first call. A candidate whose
    two texts are identical is masked without a call, like the self pairs of aa and pp. Pairs
    with an empty text are not sent and never masked.
    """

    def __init__(
        self,
        client: RerankerClient,
        step: StepTexts,
        blocks: Sequence[Block],
        *,
        margin_strategy: MarginStrategy,
        margin: float,
        instruction: str | None = None,
        max_length: int | None = None,
    ) -> None:
        self.client = client
        self.step = step
        self.blocks = list(blocks)
        self.margin_strategy: MarginStrategy = margin_strategy
        self.margin = margin
        self.instruction = instruction
        self.max_length = max_length
        #: Each anchor's threshold score (NaN when a text is empty); set by the first call.
        self.thresholds: np.ndarray | None = None
        self.calls = 0
        self.identity_masked = 0
        self._keys = np.zeros(0, dtype=np.int64)
        self._values = np.zeros(0, dtype=np.float64)
        self._n = max(len(step.texts), 1)

    @property
    def scored_pairs(self) -> int:
        """Distinct pairs scored so far in this step."""
        return len(self._keys)

    @property
    def cutoffs(self) -> np.ndarray | None:
        """Each anchor's cutoff: a candidate of row ``i`` is masked when its score is above
        ``cutoffs[i]`` (the threshold less the margin; NaN, never masked, for an empty text).
        ``None`` before the first call."""
        if self.thresholds is None:
            return None
        t = self.thresholds
        if self.margin_strategy == "absolute":
            return t - self.margin
        return t - np.abs(t) * self.margin

    def scores(self, candidates: Candidates) -> np.ndarray:
        """The guide's scores of ``candidates`` already scored in this step, without a call
        (NaN for those not scored: identical or empty texts, or not asked yet)."""
        cq, cd = candidates.text_ids(self.blocks, self.step.ids)
        keys = cq * self._n + cd
        out = np.full(len(keys), np.nan)
        if not len(self._keys):
            return out
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        hit = self._keys[at] == keys
        out[hit] = self._values[at[hit]]
        return out

    def __call__(self, candidates: Candidates) -> np.ndarray:
        """Which of ``candidates`` are masked (one ``score_pairs`` call for the new pairs)."""
        cq, cd = candidates.text_ids(self.blocks, self.step.ids)
        by_identity = self.step.masked_by_identity(cq, cd)
        ask = ~by_identity
        if self.thresholds is None:
            anchors = len(self.step.ids[0])
            scores = self._scores(
                np.concatenate([self.step.ids[0], cq[ask]]),
                np.concatenate([self.step.ids[1], cd[ask]]),
            )
            self.thresholds, scores = scores[:anchors], scores[anchors:]
        else:
            scores = self._scores(cq[ask], cd[ask])
        masked = by_identity.copy()
        masked[ask] = gist_rule(
            scores, self.thresholds[candidates.row[ask]], self.margin_strategy, self.margin
        )
        self.identity_masked += int(by_identity.sum())
        return masked

    def _scores(self, q: np.ndarray, d: np.ndarray) -> np.ndarray:
        asked = ~(self.step.empty[q] | self.step.empty[d])
        _warn_empty_texts_once(bool((~asked).any()))
        keys = (q * self._n + d)[asked]
        # Only this call's keys are sorted; the step's scored keys stay sorted by merging into
        # them, so that the many rounds of a step do not re-sort everything scored so far.
        distinct = np.unique(keys)
        missing = distinct[~in_sorted(distinct, self._keys)]
        if len(missing):
            pairs = np.stack([missing // self._n, missing % self._n], axis=1)
            got = self.client.score_pairs(
                self.step.texts,
                self.step.texts,
                pairs,
                instruction=self.instruction,
                max_length=self.max_length,
            )
            self.calls += 1
            self._keys, self._values = merge_sorted_values(
                self._keys, missing, self._values, np.asarray(got, dtype=np.float64)
            )
        out = np.full(asked.shape, np.nan)
        out[asked] = self._values[np.searchsorted(self._keys, keys)]
        return out


@dataclass
class Selection:
    """What a step's candidate selection scored, and which of those the judge masked.

    ``estimated_recall``: the selection's estimate of the share of false negatives it found (1
    when it asked about every candidate; NaN when it does not estimate it).
    """

    candidates: Candidates
    masked: np.ndarray
    audit_pairs: int = 0
    estimated_recall: float = 1.0


def judge_all(
    candidates: Candidates, judge: GuideJudge, *, estimated_recall: float = 1.0
) -> Selection:
    """The selection of a fixed set of candidates: one judge call."""
    return Selection(candidates, judge(candidates), estimated_recall=estimated_recall)


def _warn_empty_texts_once(found: bool) -> None:
    global _warned_empty_texts
    if found and not _warned_empty_texts:
        _warned_empty_texts = True
        logger.warning(
            "Some texts are empty after extraction (e.g. only unknown tokens were decoded); "
            "their pairs are not sent to the reranker and are never masked."
        )
