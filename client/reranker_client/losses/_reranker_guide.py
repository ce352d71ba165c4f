"""The reranker's part of a GIST step, shared by both reranker-guided losses.

A GIST loss concatenates similarity blocks (anchor-positive, anchor-anchor, positive-positive,
anchor-negative) into one logit row per anchor and masks the in-batch candidates that the guide
rates at least as relevant as the anchor's own positive. Here the guide is the reranker service,
and one training step goes through four stages, each a function of this module:

1. :func:`extract_texts` - the texts of every input column (raw when the batch carries them).
2. :func:`all_candidates` or :func:`prefilter_candidates` - which ``(block, row, column)``
   logits to ask the reranker about.
3. :func:`plan_pairs` - the distinct ``(query text, document text)`` pairs for them, plus each
   anchor's threshold pair ``(anchor_i, positive_i)``: one ``score_pairs`` call per step.
4. :func:`decide_masks` - the masked logits, as :class:`GuideMasks`.

Stages 2-4 are pure (no I/O, no model), so they can be tested and benchmarked without a server.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .._client import RerankerClient

logger = logging.getLogger(__name__)

#: Feature key under which :class:`~reranker_client.losses.RerankerDataCollator` passes a column's
#: raw texts to the loss (the loss removes it before the model sees the features).
RAW_TEXT_KEY = "reranker_text"

MarginStrategy = Literal["absolute", "relative"]


# --------------------------------------------------------------------------------------------
# Texts


def extract_texts(feature: Mapping[str, Any], tokenizer: Any) -> list[str]:
    """Return the texts of one input column: the raw texts if carried, else the decoded ids.

    Decoding (``skip_special_tokens=True``) returns what the student saw, not what the dataset
    held: lowercased and accent-stripped by uncased tokenizers, cut at ``max_seq_length``, with
    unknown tokens dropped, and with any prompt the trainer prepended.
    """
    raw = feature.get(RAW_TEXT_KEY)
    if raw is not None:
        return [str(text) for text in raw]
    input_ids = feature["input_ids"]
    if "cu_seq_lens_q" in feature:
        # Flattened inputs (DataCollatorWithFlattening): one row holding every sequence.
        flat = input_ids[0].tolist()
        bounds = feature["cu_seq_lens_q"].tolist()
        input_ids = [flat[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
    return list(tokenizer.batch_decode(input_ids, skip_special_tokens=True))


def without_raw_texts(feature: Mapping[str, Any]) -> dict[str, Any]:
    """The features the model may see: everything but :data:`RAW_TEXT_KEY`."""
    return {key: value for key, value in feature.items() if key != RAW_TEXT_KEY}


# --------------------------------------------------------------------------------------------
# Blocks and candidates


@dataclass(frozen=True)
class Block:
    """One similarity block of the loss: rows from ``query_column``, columns ``document_column``.

    Columns are the loss inputs: 0 anchors, 1 positives, 2+ negatives.
    """

    name: str
    query_column: int
    document_column: int

    @property
    def has_diagonal_pair(self) -> bool:
        """Whether entry ``(i, i)`` is the threshold pair (ap) or a text against itself (aa, pp)."""
        return self.document_column <= 1

    @property
    def masks_diagonal(self) -> bool:
        """Whether entry ``(i, i)`` is always masked: a text is never its own negative (aa, pp)."""
        return self.query_column == self.document_column


def loss_blocks(n_columns: int, *, contrast_anchors: bool, contrast_positives: bool) -> list[Block]:
    """The blocks of the loss's logit row, in the order it concatenates them."""
    if n_columns < 2:
        raise ValueError(
            f"the loss needs (anchor, positive[, negative...]) columns, got {n_columns} column(s)"
        )
    blocks = [Block("ap", 0, 1)]
    if contrast_anchors:
        blocks.append(Block("aa", 0, 0))
    if contrast_positives:
        blocks.append(Block("pp", 1, 1))
    for column in range(2, n_columns):
        blocks.append(Block("an" if n_columns == 3 else f"an{column - 1}", 0, column))
    return blocks


@dataclass
class Candidates:
    """Logits whose guide score the loss asks for, as parallel arrays ``(block, row, col)``."""

    block: np.ndarray
    row: np.ndarray
    col: np.ndarray

    def __len__(self) -> int:
        return int(self.block.shape[0])

    def flat_keys(self, batch_size: int) -> np.ndarray:
        """One integer per candidate: ``block * B**2 + row * B + col``."""
        return (self.block * batch_size + self.row) * batch_size + self.col

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty.copy(), empty.copy())
        return cls(
            np.concatenate([p.block for p in parts]),
            np.concatenate([p.row for p in parts]),
            np.concatenate([p.col for p in parts]),
        )


def candidates_per_row(blocks: Sequence[Block], batch_size: int) -> int:
    """Candidates in one anchor's logit row: every logit but the diagonal pairs of ap, aa, pp."""
    return len(blocks) * batch_size - sum(block.has_diagonal_pair for block in blocks)


def naive_pairs(blocks: Sequence[Block], batch_size: int) -> int:
    """Pairs a guide that scores every logit would score: ``len(blocks) * B**2``."""
    return len(blocks) * batch_size * batch_size


def all_candidates(blocks: Sequence[Block], batch_size: int) -> Candidates:
    """Every candidate of every row (the plain loss asks about all of them)."""
    rows = np.repeat(np.arange(batch_size, dtype=np.int64), batch_size)
    cols = np.tile(np.arange(batch_size, dtype=np.int64), batch_size)
    parts = []
    for index, block in enumerate(blocks):
        keep = rows != cols if block.has_diagonal_pair else slice(None)
        r, c = rows[keep], cols[keep]
        parts.append(Candidates(np.full(r.shape, index, dtype=np.int64), r, c))
    return Candidates.concat(parts)


@dataclass(frozen=True)
class PrefilterConfig:
    """How the optimized loss picks the candidates worth a reranker score.

    Attributes:
        similarity_threshold: A candidate whose student cosine is below this is a clear negative
            and never sent (``-1`` sends all).
        top_k_ratio: Keep at most this share of an anchor's row (all blocks together) ...
        min_top_k: ... but at least this many (when that many pass the thresholds) ...
        max_candidates: ... and never more than this many per anchor (``None``: no cap).
        hybrid_threshold: Send a candidate only when its student similarity exceeds this times the
            anchor's student similarity to its own positive (``0`` turns this filter off).
    """

    similarity_threshold: float
    top_k_ratio: float
    min_top_k: int
    max_candidates: int | None
    hybrid_threshold: float

    def __post_init__(self) -> None:
        if not 0.0 < self.top_k_ratio <= 1.0:
            raise ValueError(f"top_k_ratio must be in (0, 1], got {self.top_k_ratio}")
        if self.min_top_k < 0:
            raise ValueError(f"min_top_k must be >= 0, got {self.min_top_k}")
        if self.max_candidates is not None and self.max_candidates < 0:
            raise ValueError(f"max_candidates must be >= 0 or None, got {self.max_candidates}")
        if self.max_candidates is not None and self.min_top_k > self.max_candidates:
            raise ValueError(
                f"min_top_k ({self.min_top_k}) exceeds max_candidates ({self.max_candidates}); "
                "lower min_top_k or raise max_candidates"
            )
        if self.hybrid_threshold < 0:
            raise ValueError(
                f"hybrid_threshold must be >= 0 (0 turns it off), got {self.hybrid_threshold}"
            )

    def row_budget(self, row_candidates: int) -> int:
        """Most candidates one anchor may send, out of ``row_candidates``."""
        k = max(self.min_top_k, math.ceil(self.top_k_ratio * row_candidates))
        if self.max_candidates is not None:
            k = min(k, self.max_candidates)
        return min(k, row_candidates)


#: (similarity_threshold, top_k_ratio, min_top_k, max_candidates, hybrid_threshold)
PRESETS: dict[str, PrefilterConfig] = {
    "conservative": PrefilterConfig(0.2, 0.2, 20, 200, 0.4),
    "balanced": PrefilterConfig(0.3, 0.1, 10, 100, 0.5),
    "aggressive": PrefilterConfig(0.4, 0.05, 5, 50, 0.6),
}


@torch.no_grad()
def prefilter_candidates(
    columns: Sequence[Tensor],
    blocks: Sequence[Block],
    config: PrefilterConfig,
    *,
    chunk_size: int = 256,
    progress: Any = None,
) -> Candidates:
    """Pick each anchor's likely false negatives from the student's own embeddings.

    ``columns`` are the student's embeddings of each input column (``B x dim``). For every anchor
    the candidates of all blocks are pooled, the similarity and hybrid thresholds drop the clear
    negatives, and the :meth:`PrefilterConfig.row_budget` most similar survivors are kept.
    ``progress`` wraps the chunk iterator (e.g. a ``tqdm`` partial); ``None`` for none.
    """
    normalized = [torch.nn.functional.normalize(c.detach().float(), dim=-1) for c in columns]
    batch_size = normalized[0].shape[0]
    budget = config.row_budget(candidates_per_row(blocks, batch_size))
    if budget == 0:
        return Candidates.concat([])
    starts = range(0, batch_size, chunk_size)
    parts = []
    for begin in progress(starts) if progress is not None else starts:
        end = min(begin + chunk_size, batch_size)
        rows = torch.arange(begin, end, device=normalized[0].device)
        sims, valid = [], []
        for block in blocks:
            sim = normalized[block.query_column][begin:end] @ normalized[block.document_column].T
            ok = torch.ones_like(sim, dtype=torch.bool)
            if block.has_diagonal_pair:
                ok[rows - begin, rows] = False
            sims.append(sim)
            valid.append(ok)
        sim = torch.cat(sims, dim=1)
        ok = torch.cat(valid, dim=1)
        if config.similarity_threshold > -1.0:
            ok &= sim >= config.similarity_threshold
        if config.hybrid_threshold > 0.0:
            own = (normalized[0][begin:end] * normalized[1][begin:end]).sum(-1, keepdim=True)
            ok &= sim > config.hybrid_threshold * own
        ranked = sim.masked_fill(~ok, -math.inf)
        values, flat = torch.topk(ranked, budget, dim=1)
        keep = values > -math.inf
        local_row = torch.arange(end - begin, device=flat.device).unsqueeze(1).expand_as(flat)
        picked = flat[keep].cpu().numpy()
        picked_rows = local_row[keep].cpu().numpy() + begin
        parts.append(Candidates(picked // batch_size, picked_rows, picked % batch_size))
    return Candidates.concat(parts)


# --------------------------------------------------------------------------------------------
# Pairs


@dataclass
class StepTexts:
    """The distinct texts of one step (each once) and every column as ids into them."""

    texts: list[str]
    ids: list[np.ndarray]
    empty: np.ndarray

    @classmethod
    def of(cls, texts: Sequence[Sequence[str]]) -> StepTexts:
        vocabulary: dict[str, int] = {}
        ids = [
            np.fromiter((vocabulary.setdefault(t, len(vocabulary)) for t in column), dtype=np.int64)
            for column in texts
        ]
        vocab = list(vocabulary)
        empty = np.fromiter((not t.strip() for t in vocab), dtype=bool, count=len(vocab))
        return cls(vocab, ids, empty)

    def candidate_ids(
        self, blocks: Sequence[Block], candidates: Candidates
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (query, document) text ids of each candidate."""
        query_ids = np.stack([self.ids[block.query_column] for block in blocks])
        document_ids = np.stack([self.ids[block.document_column] for block in blocks])
        return (
            query_ids[candidates.block, candidates.row],
            document_ids[candidates.block, candidates.col],
        )


@dataclass
class PairPlan:
    """The distinct text pairs of one step and where each threshold and candidate finds its score.

    ``pairs[k] = (query_text_id, document_text_id)`` index into ``texts``; ``threshold_pair[i]``
    and ``candidate_pair[c]`` index into ``pairs`` (``-1``: not asked, because a text is empty or
    because the candidate is a text against itself, which ``identical`` marks).
    """

    texts: list[str]
    pairs: np.ndarray
    threshold_pair: np.ndarray
    candidate_pair: np.ndarray
    identical: np.ndarray

    def pair_list(self) -> list[list[int]]:
        return self.pairs.tolist()


def plan_pairs(
    texts: Sequence[Sequence[str]], blocks: Sequence[Block], candidates: Candidates
) -> PairPlan:
    """Map the thresholds and candidates to distinct text pairs (each text once in ``texts``).

    A reranker is not symmetric, so ``(x, y)`` and ``(y, x)`` stay two pairs. Texts that are empty
    after stripping cannot be scored: their pairs are left out (``-1``) and so never masked. A
    candidate whose two texts are identical is not asked either: it is masked by identity.
    """
    step = StepTexts.of(texts)
    n_texts = max(len(step.texts), 1)
    cq, cd = step.candidate_ids(blocks, candidates)
    identical = (cq == cd) & ~step.empty[cq]
    q = np.concatenate([step.ids[0], cq])
    d = np.concatenate([step.ids[1], cd])
    asked = ~(step.empty[q] | step.empty[d])
    asked[len(step.ids[0]) :] &= ~identical
    keys, inverse = np.unique(q[asked] * n_texts + d[asked], return_inverse=True)
    where = np.full(q.shape, -1, dtype=np.int64)
    where[asked] = inverse.reshape(-1)
    batch_size = step.ids[0].shape[0]
    return PairPlan(
        texts=step.texts,
        pairs=np.stack([keys // n_texts, keys % n_texts], axis=1),
        threshold_pair=where[:batch_size],
        candidate_pair=where[batch_size:],
        identical=identical,
    )


# --------------------------------------------------------------------------------------------
# Masks


@dataclass
class GuideMasks:
    """The logits of one step that are masked, per block, as row-sorted ``(rows, cols)`` tensors."""

    blocks: list[Block]
    rows: list[Tensor]
    cols: list[Tensor]
    thresholds: Tensor
    #: Masked candidates (the self pairs of aa and pp, always masked, not included).
    masked_candidates: int

    def apply(self, block_index: int, sim: Tensor, begin: int) -> Tensor:
        """Set the masked logits of rows ``begin : begin + len(sim)`` of a block to ``-inf``."""
        rows, cols = self.rows[block_index], self.cols[block_index]
        lo = int(torch.searchsorted(rows, begin))
        hi = int(torch.searchsorted(rows, begin + sim.shape[0]))
        if hi > lo:
            sim[rows[lo:hi] - begin, cols[lo:hi]] = -torch.inf
        return sim

    def masked_set(self, *, include_self_pairs: bool = False) -> set[tuple[str, int, int]]:
        """The masked logits as ``(block name, row, col)`` (for tests and reports)."""
        out = set()
        for block, rows, cols in zip(self.blocks, self.rows, self.cols):
            for r, c in zip(rows.tolist(), cols.tolist()):
                if include_self_pairs or not (block.masks_diagonal and r == c):
                    out.add((block.name, r, c))
        return out


def decide_masks(
    plan: PairPlan,
    scores: np.ndarray,
    blocks: Sequence[Block],
    candidates: Candidates,
    batch_size: int,
    *,
    margin_strategy: MarginStrategy,
    margin: float,
    device: torch.device | str | None = None,
) -> GuideMasks:
    """Mask the candidates the reranker rates above their anchor's threshold, as GIST does.

    With ``t_i = score(anchor_i, positive_i)``, candidate ``(b, i, j)`` is masked when its score is
    above ``t_i - margin`` (absolute) or ``t_i - |t_i| * margin`` (relative). The own positive is
    never a candidate, so it is never masked; the self pairs of aa and pp always are.
    """
    scores = np.asarray(scores, dtype=np.float64)
    lookup = np.append(scores, np.nan)  # index -1 (not asked) reads NaN, which never compares true
    thresholds = lookup[plan.threshold_pair]
    masked = gist_rule(
        lookup[plan.candidate_pair], thresholds[candidates.row], margin_strategy, margin
    )
    return masks_from(
        blocks, candidates, masked | plan.identical, thresholds, batch_size, device=device
    )


def gist_rule(
    scores: np.ndarray, thresholds: np.ndarray, margin_strategy: MarginStrategy, margin: float
) -> np.ndarray:
    """Which candidate scores are above their anchor's threshold (NaN never is)."""
    if margin_strategy == "absolute":
        return scores > thresholds - margin
    if margin_strategy == "relative":
        return scores > thresholds - np.abs(thresholds) * margin
    raise ValueError(f"margin_strategy must be 'absolute' or 'relative', got {margin_strategy!r}")


def masks_from(
    blocks: Sequence[Block],
    candidates: Candidates,
    masked: np.ndarray,
    thresholds: np.ndarray,
    batch_size: int,
    *,
    device: torch.device | str | None = None,
) -> GuideMasks:
    """The :class:`GuideMasks` of the ``masked`` candidates, plus the self pairs of aa and pp."""
    diagonal = np.arange(batch_size, dtype=np.int64)
    all_rows, all_cols = [], []
    for index, block in enumerate(blocks):
        pick = masked & (candidates.block == index)
        rows, cols = candidates.row[pick], candidates.col[pick]
        if block.masks_diagonal:
            rows, cols = np.concatenate([rows, diagonal]), np.concatenate([cols, diagonal])
        order = np.argsort(rows, kind="stable")
        all_rows.append(torch.as_tensor(rows[order], device=device))
        all_cols.append(torch.as_tensor(cols[order], device=device))
    return GuideMasks(
        blocks=list(blocks),
        rows=all_rows,
        cols=all_cols,
        thresholds=torch.as_tensor(thresholds, device=device),
        masked_candidates=int(masked.sum()),
    )


# --------------------------------------------------------------------------------------------
# Accounting


@dataclass
class RerankerStepStats:
    """What one loss step asked of the reranker.

    Attributes:
        anchors: Anchors in the step (the batch size).
        naive_pairs: Pairs a guide scoring every logit would score (``blocks x B**2``).
        considered_pairs: Pairs the loss chose to ask about, before removing duplicates: the
            ``B`` threshold pairs plus the candidates (all of them for the plain loss, the
            selected ones and the audit sample for the optimized one).
        sent_pairs: Distinct pairs sent to the service (the client's ``pairs_sent``).
        cache_hits: Pairs the service answered from its score cache.
        requests: HTTP requests the step made (retries included).
        retries: Requests repeated after a transient failure.
        fallbacks: Batch requests sent as single ``/rerank`` calls instead.
        masked: Logits masked as false negatives (the self pairs of aa/pp not counted).
        identity_masked: Of those, candidates masked without a call because both texts are equal.
        audit_pairs: Candidates scored only to estimate the misses (optimized loss).
        rounds: ``score_pairs`` calls of the step (more than 1 when the budget grew).
        estimated_recall: The step's estimate of the share of false negatives it masked (1 for
            the plain loss, which asks about all of them; NaN for the presets, which do not
            estimate it).
        wait_seconds: Seconds the step spent waiting for the reranker (calls and retries).
        failures: Reranker calls that failed (and were waited out or skipped).
        skipped: 1 if the step was skipped because the reranker failed (``on_reranker_error``).
    """

    anchors: int = 0
    naive_pairs: int = 0
    considered_pairs: int = 0
    sent_pairs: int = 0
    cache_hits: int = 0
    requests: int = 0
    retries: int = 0
    fallbacks: int = 0
    masked: int = 0
    identity_masked: int = 0
    audit_pairs: int = 0
    rounds: int = 0
    estimated_recall: float = 1.0
    wait_seconds: float = 0.0
    failures: int = 0
    skipped: int = 0

    @property
    def reduction(self) -> float:
        """Share of the naive pairs that were not sent (``1 - sent / naive``)."""
        return 1.0 - self.sent_pairs / self.naive_pairs if self.naive_pairs else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "reduction": self.reduction}

    def summary(self) -> str:
        return (
            f"reranker: sent {self.sent_pairs:,} of {self.naive_pairs:,} naive pairs "
            f"({self.reduction:.1%} fewer; {self.considered_pairs:,} considered, "
            f"{self.cache_hits:,} cache hits), masked {self.masked:,}, "
            f"estimated recall {self.estimated_recall:.1%}"
        )


@dataclass
class StatsAccumulator:
    """Sums of :class:`RerankerStepStats` over the steps since the last :meth:`pop`."""

    forwards: int = 0
    totals: dict[str, float] = field(default_factory=dict)

    def add(self, stats: RerankerStepStats) -> None:
        self.forwards += 1
        for f in fields(stats):
            self.totals[f.name] = self.totals.get(f.name, 0) + getattr(stats, f.name)

    def pop(self, prefix: str = "reranker_", steps: int | None = None) -> dict[str, float]:
        """Per-step means since the last call (empty if no step ran), and start again.

        ``steps`` is the number of optimizer steps in the period: under gradient accumulation
        several forward passes (micro-batches) make one step, and their counts are summed into
        it. By default each forward pass is a step. Ratios (``estimated_recall``) are means over
        the forward passes.
        """
        if not self.forwards:
            return {}
        per = steps if steps else self.forwards
        means = {
            f"{prefix}{name}": total / (self.forwards if name in _RATIOS else per)
            for name, total in self.totals.items()
        }
        naive = self.totals.get("naive_pairs", 0)
        means[f"{prefix}reduction"] = 1.0 - self.totals["sent_pairs"] / naive if naive else 0.0
        self.forwards, self.totals = 0, {}
        return means


#: Fields of :class:`RerankerStepStats` that are ratios: averaged, never summed over micro-batches.
_RATIOS = frozenset({"estimated_recall"})


# --------------------------------------------------------------------------------------------
# The call


class GuideJudge:
    """Scores candidates through the service and applies the GIST rule, for one step.

    Each distinct ``(query, document)`` text pair is scored at most once per step, however many
    calls the step makes; the anchors' threshold pairs go with the first call. A candidate whose
    two texts are identical is masked without a call, like the self pairs of aa and pp.
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

    def __call__(self, candidates: Candidates) -> np.ndarray:
        """Which of ``candidates`` are masked (one ``score_pairs`` call for the new pairs)."""
        cq, cd = self.step.candidate_ids(self.blocks, candidates)
        identical = (cq == cd) & ~self.step.empty[cq]
        ask = ~identical
        if self.thresholds is None:
            anchors = len(self.step.ids[0])
            scores = self._scores(
                np.concatenate([self.step.ids[0], cq[ask]]),
                np.concatenate([self.step.ids[1], cd[ask]]),
            )
            self.thresholds, scores = scores[:anchors], scores[anchors:]
        else:
            scores = self._scores(cq[ask], cd[ask])
        masked = identical.copy()
        masked[ask] = gist_rule(
            scores, self.thresholds[candidates.row[ask]], self.margin_strategy, self.margin
        )
        self.identity_masked += int(identical.sum())
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


def in_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Which ``values`` are in ``sorted_keys`` (a sorted array)."""
    if not len(sorted_keys):
        return np.zeros(values.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[at] == values


def merge_sorted(keys: np.ndarray, new_keys: np.ndarray) -> np.ndarray:
    """``keys`` and ``new_keys`` (both sorted) as one sorted array, in linear time."""
    return _interleave(keys, new_keys, _new_slots(keys, new_keys))


def merge_sorted_values(
    keys: np.ndarray, new_keys: np.ndarray, values: np.ndarray, new_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`merge_sorted`, with ``values`` and ``new_values`` following their keys."""
    slots = _new_slots(keys, new_keys)
    return _interleave(keys, new_keys, slots), _interleave(values, new_values, slots)


def _new_slots(keys: np.ndarray, new_keys: np.ndarray) -> np.ndarray:
    """Where each of ``new_keys`` lands in the merged array."""
    return np.searchsorted(keys, new_keys, side="right") + np.arange(len(new_keys))


def _interleave(old: np.ndarray, new: np.ndarray, slots: np.ndarray) -> np.ndarray:
    merged = np.empty(len(old) + len(new), dtype=np.result_type(old, new))
    keep = np.ones(len(merged), dtype=bool)
    keep[slots] = False
    merged[slots], merged[keep] = new, old
    return merged


_warned_empty_texts = False


def _warn_empty_texts_once(found: bool) -> None:
    global _warned_empty_texts
    if found and not _warned_empty_texts:
        _warned_empty_texts = True
        logger.warning(
            "Some texts are empty after extraction (e.g. only unknown tokens were decoded); "
            "their pairs are not sent to the reranker and are never masked."
        )


@dataclass
class Selection:
    """What a step's candidate selection scored, and which of those the judge masked."""

    candidates: Candidates
    masked: np.ndarray
    audit_pairs: int = 0
    estimated_recall: float = 1.0


def judge_all(
    candidates: Candidates, judge: GuideJudge, *, estimated_recall: float = 1.0
) -> Selection:
    """The selection of the plain loss and the presets: one call for a fixed set of candidates.

    ``estimated_recall``: 1 for the plain loss, which asks about every candidate; NaN for the
    presets, which do not estimate it.
    """
    return Selection(candidates, judge(candidates), estimated_recall=estimated_recall)


def consult_reranker(
    client: RerankerClient,
    texts: Sequence[Sequence[str]],
    blocks: Sequence[Block],
    select: Any,
    *,
    margin_strategy: MarginStrategy,
    margin: float,
    instruction: str | None,
    max_length: int | None,
    device: torch.device | str | None = None,
    training: bool = True,
) -> tuple[GuideMasks, RerankerStepStats]:
    """Score the step's candidates and decide the masks.

    ``select(step, judge)`` returns a :class:`Selection`, calling ``judge`` once per round (a
    :class:`Candidates` for :func:`judge_all` with one call, or the adaptive budget).
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
    selection: Selection = select(step, judge)
    spent = client.stats.snapshot() - before
    assert judge.thresholds is not None
    masks = masks_from(
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
