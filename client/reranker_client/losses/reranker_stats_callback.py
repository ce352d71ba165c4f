from __future__ import annotations

from typing import Any, Protocol

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class _ReportsRerankerStats(Protocol):
    def pop_log_stats(self, steps: int | None = None) -> dict[str, float]: ...


class RerankerStatsCallback(TrainerCallback):
    """Adds the reranker accounting of the given losses to every training log.

    At each training log it adds the per-step means, since the previous log, of the loss's
    :class:`~reranker_client.losses.RerankerStepStats` (``reranker_naive_pairs``,
    ``reranker_considered_pairs``, ``reranker_sent_pairs``, ``reranker_cache_hits``,
    ``reranker_requests``, ``reranker_masked``, ``reranker_anchors``) and the reduction over the
    whole period (``reranker_reduction``), with the failure counters (``reranker_retries``,
    ``reranker_wait_seconds``, ``reranker_failures``, ``reranker_skipped``, ...) and the
    optimized loss's ``reranker_estimated_recall``. Only training steps count; evaluation does
    not. Under gradient accumulation the micro-batches of one optimizer step are summed into
    that step.

    The values go into ``trainer.state.log_history`` and to the callbacks after this one (the
    console progress bar or printer). The ``report_to`` integrations (W&B, TensorBoard, ...) are
    called before the callbacks given to the trainer; for them to see the values too, put this one
    first: ``trainer.callback_handler.callbacks.insert(0, RerankerStatsCallback(loss))``.

    Args:
        *losses: The reranker-guided losses to report (several are prefixed with their position
            when more than one is given: ``reranker0_sent_pairs``, ...).
    """

    def __init__(self, *losses: _ReportsRerankerStats) -> None:
        if not losses:
            raise ValueError("RerankerStatsCallback needs the loss(es) to report on.")
        self.losses = losses
        self._logged_step = 0

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None or "loss" not in logs:
            return  # evaluation and end-of-training summaries
        entries: dict[str, float] = {}
        steps = state.global_step - self._logged_step
        self._logged_step = state.global_step
        for index, loss in enumerate(self.losses):
            stats = loss.pop_log_stats(steps=steps or None)
            if len(self.losses) > 1:
                stats = {
                    key.replace("reranker_", f"reranker{index}_", 1): value
                    for key, value in stats.items()
                }
            entries.update(stats)
        logs.update(entries)
        # The trainer appended a copy of `logs` to the history just before calling us.
        if state.log_history:
            state.log_history[-1].update(entries)
