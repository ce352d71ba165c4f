"""What each step asked of the reranker, and the per-step means the training logs show."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


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
