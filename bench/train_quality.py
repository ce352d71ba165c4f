"""What reranker guidance does to a trained model: one student, four losses, held-out retrieval.

The end-to-end proof of issue 20. One weak student (all-MiniLM-L6-v2's first two layers, mean
pooled: the ``weak`` student of ``bench/loss_bill.py``) is trained from the same start, on the same
data (the train split of ``bench/real_text_pairs.py``'s real docstring pairs: first line the
anchor, the rest the positive), with the same seed, batches, steps and optimizer, by each of:

- ``mnrl``: sentence-transformers' ``CachedMultipleNegativesRankingLoss``, set up as GIST without
  a guide: the same temperature (``scale = 1 / temperature``) and the same in-batch blocks
  (``directions=("query_to_doc", "query_to_query", "doc_to_doc")``, one joint softmax, which is
  GIST's anchor-positive, anchor-anchor and positive-positive blocks with the self pairs masked),
  so that the only difference to the GIST losses is what the guide masks;
- ``gist``: sentence-transformers' ``CachedGISTEmbedLoss`` with the full MiniLM in process as the
  guide;
- ``reranker_gist``: ``RerankerCachedGISTEmbedLoss`` with the service serving MiniLM (as a
  bi-encoder: its score is the guide's cosine, so this is ``gist`` with the guide behind HTTP);
- ``optimized``: ``OptimizedRerankerCachedGISTEmbedLoss`` with its default selection
  (``RecallBudget()``).

The three GIST losses share the margin (``--margin``, absolute) and the temperature. Every run
uses the no-duplicates batch sampler (seeded with the run's seed, so every loss of a seed sees
the same batches), a constant learning rate without warm-up, ``--steps`` optimizer steps of
``--batch-size`` pairs and GradCache mini-batches of ``--mini-batch-size``.

Each trained model and the untrained start (``start``, evaluated once: it does not depend on the
seed) are evaluated on the held-out queries (the test split's anchors, the first
``--eval-queries``) against the whole held-out corpus (every test positive) with
sentence-transformers' ``InformationRetrievalEvaluator`` (cosine): nDCG@10, MRR@10, recall@100.
Each query's one relevant document is its own positive.

Per run it also reports the wall seconds per optimizer step (the training loop's wall time over
its steps; the evaluation is not in it), the seconds the loss waited for the reranker and the
distinct pairs it sent (both totals over the run, from the loss's per-step
``RerankerStepStats``; 0 for ``start``, ``mnrl`` and ``gist``).

The service is started once (``reranker-server --model <MiniLM> --dtype float32``) and shared by
the reranker losses. Its score and embedding caches are keyed by the raw strings, and every run
of a seed sees the same texts, so a later run would find what an earlier one computed. To keep
each run's reranker bill cold-started, as a fresh training run's would be, each reranker-guided
run appends its own number of spaces (0, 1, 2, ...) to every training text: MiniLM's tokenizer
drops trailing whitespace (checked on every text before each run: the token ids are identical),
so the student, the batches and the scores are unchanged, and only the cache keys differ. Within
a run the caches work as they would in training (later epochs repeat texts and pairs).

Writes to ``--out-dir`` (default ``docs``): ``train-quality.json`` (``{"results": [{"loss",
"seed", "ndcg@10", "mrr@10", "recall@100", "seconds_per_step", "reranker_wait_s", "pairs_sent",
"steps", "batch_size"}]}``, rewritten after every run), ``train-quality.md`` (the command line, the
machine, mean +- half-range over the seeds per loss, and every run) and ``train-quality.png``
(needs matplotlib, which the project venv may lack; without it the plot is skipped with a message,
and ``--plot-only docs/train-quality.json`` draws it later from any Python with matplotlib).

Run (the data is written first when ``--data`` has none: about 1 min)::

    nice -n 10 .venv/bin/python bench/train_quality.py            # B=256, 200 steps, 2 seeds

What it costs on 2 shared cores (from a smoke run at B=16 under another benchmark's load, so
rough): a training step costs about 0.15 (``mnrl``) to 0.21 (``gist``, ``reranker_gist``) wall
seconds per pair at 256 tokens, and one evaluation (the 2,397-document corpus) about 45 s. The
defaults are therefore many hours (about 45-65 s per step at B=256: 12 h or more per seed).
About 40 minutes: ``--batch-size 64 --steps 30 --max-seq-length 128`` (an estimate, not run).

Smoke run: ``--batch-size 16 --steps 3 --seeds 1 --eval-queries 50 --out-dir /tmp/tq`` (about
7 min, most of it the engine start and the five evaluations; ``--eval-corpus 100`` cuts those).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Heavy imports (torch, sentence-transformers, the service helpers) are made where they are
# used, so that ``--plot-only`` runs in any Python that has matplotlib.

ROOT = Path(__file__).resolve().parent.parent
LOSSES = ("start", "mnrl", "gist", "reranker_gist", "optimized")
TRAINED = LOSSES[1:]
RERANKER_LOSSES = ("reranker_gist", "optimized")
METRICS = ("ndcg@10", "mrr@10", "recall@100")
FIELDS = (
    "loss",
    "seed",
    *METRICS,
    "seconds_per_step",
    "reranker_wait_s",
    "pairs_sent",
    "steps",
    "batch_size",
)
#: Layers of MiniLM the weak student keeps (``bench/loss_bill.py``'s ``weak``).
STUDENT_LAYERS = 2
DEFAULT_DATA = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "reranker-service"
    / "real-text-pairs"
)
JSON_NAME, MD_NAME, PNG_NAME = "train-quality.json", "train-quality.md", "train-quality.png"


# --------------------------------------------------------------------------------------------
# Data


def ensure_data(data_dir: Path) -> None:
    """Write the real-text set with ``bench/real_text_pairs.py`` if it is not there yet."""
    if (data_dir / "train.jsonl").is_file() and (data_dir / "test.jsonl").is_file():
        return
    command = [sys.executable, str(ROOT / "bench" / "real_text_pairs.py"), "--out", str(data_dir)]
    print(f"no data in {data_dir}; writing it: {shlex.join(command)}", flush=True)
    subprocess.run(command, check=True)


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(anchor, positive) of a ``real_text_pairs.py`` split; a bad line names itself."""
    from loss_bill import load_rows

    texts, rows = load_rows(path)
    return [(texts[a], texts[p]) for a, p, _ in rows.tolist()]


def with_suffix(pairs: Sequence[tuple[str, str]], suffix: str) -> dict[str, list[str]]:
    return {
        "anchor": [a + suffix for a, _ in pairs],
        "positive": [p + suffix for _, p in pairs],
    }


def check_same_tokens(tokenizer: Any, texts: list[str], suffix: str) -> None:
    """The suffix must not change a single token id (else it would change what is trained)."""
    if not suffix:
        return
    # Whole texts (no truncation: a difference past the student's limit would still be a
    # difference for a reranker with a longer one); verbose=False: no "too long" warning.
    plain = tokenizer(texts, verbose=False)["input_ids"]
    padded = tokenizer([t + suffix for t in texts], verbose=False)["input_ids"]
    changed = sum(a != b for a, b in zip(plain, padded))
    if changed:
        raise RuntimeError(
            f"a {len(suffix)}-space suffix changes the token ids of {changed} texts; the "
            "cache-separating suffix would change the training, so this tokenizer needs another "
            "way to keep the runs' caches apart"
        )


# --------------------------------------------------------------------------------------------
# Models, losses, evaluation


def minilm_dir() -> Path:
    from reranker_server.testing.tiny_models import MINILM_DIR

    return MINILM_DIR


def weak_student(max_seq_length: int) -> Any:
    """MiniLM's first two layers with its own mean pooling and normalization (always the same
    weights: nothing is drawn at random)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    bert = model[0].auto_model
    bert.encoder.layer = bert.encoder.layer[:STUDENT_LAYERS]
    bert.config.num_hidden_layers = STUDENT_LAYERS
    model.max_seq_length = max_seq_length
    return model


def make_evaluator(
    test: Sequence[tuple[str, str]], n_queries: int | None, n_corpus: int | None
) -> Any:
    """Queries: the first ``n_queries`` held-out anchors; corpus: every held-out positive (the
    first ``n_corpus`` only with ``--eval-corpus``, a smoke-test shortcut)."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )
    from sentence_transformers.util import cos_sim

    corpus = test if n_corpus is None else test[:n_corpus]
    chosen = corpus if n_queries is None else corpus[:n_queries]
    return InformationRetrievalEvaluator(
        queries={f"q{i}": anchor for i, (anchor, _) in enumerate(chosen)},
        corpus={f"d{i}": positive for i, (_, positive) in enumerate(corpus)},
        relevant_docs={f"q{i}": {f"d{i}"} for i in range(len(chosen))},
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1],
        precision_recall_at_k=[100],
        map_at_k=[100],
        batch_size=64,
        name="heldout",
        write_csv=False,
        score_functions={"cosine": cos_sim},
    )


def evaluate(model: Any, evaluator: Any) -> tuple[dict[str, float], float]:
    """The metrics, and the seconds the evaluation took."""
    started = time.monotonic()
    model.eval()
    metrics = evaluator(model)
    scores = {name: float(metrics[f"heldout_cosine_{name}"]) for name in METRICS}
    return scores, time.monotonic() - started


def make_loss(name: str, model: Any, args: argparse.Namespace, guide: Any, client: Any) -> Any:
    if name == "mnrl":
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
        )

        return CachedMultipleNegativesRankingLoss(
            model,
            scale=1.0 / args.temperature,
            mini_batch_size=args.mini_batch_size,
            directions=("query_to_doc", "query_to_query", "doc_to_doc"),
            partition_mode="joint",
        )
    gist_options = dict(
        mini_batch_size=args.mini_batch_size,
        temperature=args.temperature,
        margin_strategy="absolute",
        margin=args.margin,
    )
    if name == "gist":
        from sentence_transformers.sentence_transformer.losses import CachedGISTEmbedLoss

        return CachedGISTEmbedLoss(model, guide, **gist_options)
    from reranker_client.losses import (
        OptimizedRerankerCachedGISTEmbedLoss,
        RerankerCachedGISTEmbedLoss,
    )

    # The service truncates each text where the student (and the in-process guide) does.
    reranker_options = dict(gist_options, max_length=args.max_seq_length)
    if name == "reranker_gist":
        return RerankerCachedGISTEmbedLoss(model, client=client, **reranker_options)
    if name == "optimized":
        return OptimizedRerankerCachedGISTEmbedLoss(model, client=client, **reranker_options)
    raise ValueError(f"unknown loss {name!r}; one of {TRAINED}")


# --------------------------------------------------------------------------------------------
# One training run


def run_meter(loss: Any, label: str, steps: int) -> Any:
    """A callback that times the steps, collects the loss's per-step reranker accounting and
    prints progress at each log."""
    from transformers import TrainerCallback

    class RunMeter(TrainerCallback):
        def __init__(self) -> None:
            self.began = self.last_end = 0.0
            self.step_seconds: list[float] = []
            self.reranker: list[Any] = []  # RerankerStepStats of each step

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.began = self.last_end = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            self.step_seconds.append(now - self.last_end)
            self.last_end = now
            # One reranker consultation per optimizer step (no gradient accumulation here).
            stats = getattr(loss, "last_step_stats", None)
            if stats is not None:
                self.reranker.append(stats)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if not logs or "loss" not in logs:
                return
            extra = ""
            if "reranker_sent_pairs" in logs:
                extra = (
                    f", reranker: {logs['reranker_sent_pairs']:.0f} pairs/step, "
                    f"{logs.get('reranker_wait_seconds', 0):.2f} s/step waiting, "
                    f"estimated recall {logs.get('reranker_estimated_recall', 1):.1%}"
                )
            print(
                f"    {label}: step {state.global_step}/{steps}, loss {logs['loss']:.4f}, "
                f"{time.monotonic() - self.began:.0f} s{extra}",
                flush=True,
            )

    return RunMeter()


def train_run(
    name: str,
    seed: int,
    args: argparse.Namespace,
    train_pairs: Sequence[tuple[str, str]],
    suffix: str,
    guide: Any,
    service_url: str | None,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Train a fresh weak student with one loss; return it, its result row (without the
    metrics) and the figures only the markdown shows."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers

    model = weak_student(args.max_seq_length)
    dataset = Dataset.from_dict(with_suffix(train_pairs, suffix))
    client = None
    if name in RERANKER_LOSSES:
        from reranker_client import RerankerClient

        assert service_url is not None
        check_same_tokens(model.tokenizer, [*dataset["anchor"], *dataset["positive"]], suffix)
        client = RerankerClient(service_url, timeout=600)
    loss = make_loss(name, model, args, guide, client)
    label = f"{name} seed {seed}"
    meter = run_meter(loss, label, args.steps)
    with tempfile.TemporaryDirectory() as checkpoints:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=checkpoints,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            dataloader_drop_last=True,
            seed=seed,
            data_seed=seed,
            logging_steps=max(1, args.steps // 10),
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer_class: Any = SentenceTransformerTrainer
        if name in RERANKER_LOSSES:
            # Raw texts for the reranker, and its accounting in the logs.
            from reranker_client.losses import RerankerTrainer

            trainer_class = RerankerTrainer
        trainer = trainer_class(
            model=model,
            args=training_args,
            train_dataset=dataset,
            loss=loss,
            callbacks=[meter],
        )
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the meter prints one line per log
        before = client.stats.snapshot() if client is not None else None
        trainer.train()
    steps = trainer.state.global_step
    train_seconds = meter.last_end - meter.began
    stats = meter.reranker
    row = {
        "loss": name,
        "seed": seed,
        "seconds_per_step": train_seconds / steps if steps else 0.0,
        "reranker_wait_s": float(sum(s.wait_seconds for s in stats)),
        "pairs_sent": int(sum(s.sent_pairs for s in stats)),
        "steps": steps,
        "batch_size": args.batch_size,
    }
    extra: dict[str, Any] = {
        "train_seconds": train_seconds,
        "step_seconds": meter.step_seconds,
        "suffix_spaces": len(suffix),
    }
    if client is not None:
        assert before is not None
        spent = client.stats.snapshot() - before
        client.close()
        # The per-step stats and the client's own counters must tell the same story.
        if spent.pairs_sent != row["pairs_sent"]:
            print(
                f"    warning: the steps' stats count {row['pairs_sent']} pairs sent, the "
                f"client {spent.pairs_sent}",
                flush=True,
            )
        extra.update(
            cache_hits=int(sum(s.cache_hits for s in stats)),
            masked_per_step=statistics.fmean(s.masked for s in stats) if stats else 0.0,
            naive_per_step=statistics.fmean(s.naive_pairs for s in stats) if stats else 0.0,
            estimated_recall=statistics.fmean(s.estimated_recall for s in stats)
            if stats
            else math.nan,
            requests=spent.requests,
            retries=spent.retries,
        )
    return model, row, extra


def service_cpu_seconds(service: Any) -> float:
    """CPU seconds used so far by the service's processes (server, engine core, workers)."""
    if service is None:
        return 0.0
    import psutil

    total = 0.0
    for process in [psutil.Process(service.proc.pid), *service.descendants()]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


# --------------------------------------------------------------------------------------------
# Report


def half_range(values: Sequence[float]) -> float:
    return (max(values) - min(values)) / 2 if values else 0.0


def by_loss(results: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in results:
        grouped.setdefault(row["loss"], []).append(row)
    return {name: grouped[name] for name in LOSSES if name in grouped}


def write_json(results: Sequence[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{key: row[key] for key in FIELDS} for row in results]
    path.write_text(json.dumps({"results": rows}, indent=1) + "\n")


def summary_table(results: Sequence[dict[str, Any]]) -> list[str]:
    """Per loss: mean +- half-range over the seeds, and the per-seed paired nDCG@10 gain over
    ``mnrl``."""
    grouped = by_loss(results)
    mnrl = {row["seed"]: row["ndcg@10"] for row in grouped.get("mnrl", [])}
    lines = [
        "| loss | seeds | nDCG@10 | MRR@10 | recall@100 | nDCG@10 - mnrl (paired) "
        "| s/step | reranker wait s/step | pairs sent/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(values: Sequence[float], digits: int) -> str:
        return f"{statistics.fmean(values):.{digits}f} ± {half_range(values):.{digits}f}"

    for name, rows in grouped.items():
        gains = [row["ndcg@10"] - mnrl[row["seed"]] for row in rows if row["seed"] in mnrl]
        per_step = [
            (row["reranker_wait_s"] / row["steps"], row["pairs_sent"] / row["steps"])
            if row["steps"]
            else (0.0, 0.0)
            for row in rows
        ]
        lines.append(
            f"| {name} | {len(rows)} | "
            + " | ".join(cell([row[m] for row in rows], 4) for m in METRICS)
            + f" | {cell(gains, 4) if gains and name != 'mnrl' else '-'}"
            + f" | {cell([row['seconds_per_step'] for row in rows], 2)}"
            + f" | {cell([w for w, _ in per_step], 2)}"
            + f" | {cell([p for _, p in per_step], 0)} |"
        )
    return lines


def runs_table(results: Sequence[dict[str, Any]], extras: dict[tuple[str, int], Any]) -> list[str]:
    lines = [
        "| loss | seed | nDCG@10 | MRR@10 | recall@100 | s/step | train s | eval s "
        "| reranker wait s | pairs sent | cache hits | masked/step | est. recall | suffix "
        "| service CPU s | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        extra = extras.get((row["loss"], row["seed"]), {})
        recall = extra.get("estimated_recall")
        service_cpu = extra.get("service_cpu_s")
        load = extra.get("load")
        cells = [
            row["loss"],
            str(row["seed"]),
            *(f"{row[m]:.4f}" for m in METRICS),
            f"{row['seconds_per_step']:.2f}",
            f"{extra.get('train_seconds', 0):.0f}",
            f"{extra.get('eval_seconds', 0):.0f}",
            f"{row['reranker_wait_s']:.1f}",
            f"{row['pairs_sent']:,}",
            f"{extra.get('cache_hits', 0):,}",
            f"{extra.get('masked_per_step', 0):.0f}",
            "-" if recall is None or math.isnan(recall) else f"{recall:.1%}",
            str(extra.get("suffix_spaces", 0)),
            "-" if service_cpu is None else f"{service_cpu:.0f}",
            "-" if load is None else f"{load[0]:.1f} → {load[1]:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine_lines() -> list[str]:
    import run as bench_run  # bench/run.py's machine description (CPU, memory, versions, code)

    m = bench_run.machine()
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            return f"{name} (not installed)"

    import torch

    return [
        f"- CPU: {m['cpu']} ({m['cpu_count']} cores as seen by `os.cpu_count()`), "
        f"memory {m['memory']}, no GPU; torch uses {torch.get_num_threads()} threads",
        f"- Python {m['python']}, {m['torch']}, {version('sentence-transformers')}, "
        f"{version('transformers')}, {m['vllm']}; {m['platform']}",
        f"- Code measured: {m.get('code') or 'unknown'}",
    ]


def write_markdown(
    path: Path,
    results: Sequence[dict[str, Any]],
    extras: dict[tuple[str, int], Any],
    args: argparse.Namespace,
    context: dict[str, Any],
    plot_note: str,
) -> str:
    n_queries, corpus = context["eval_queries"], context["corpus"]
    corpus_words = (
        "whole held-out corpus"
        if args.eval_corpus is None
        else "first documents of the held-out corpus (`--eval-corpus`: a smoke run, not figures)"
    )
    lines = [
        "# Training quality: what reranker guidance does to a trained model",
        "",
        "Written by `bench/train_quality.py` (its docstring says what each loss is and how the "
        "runs are kept comparable); the figures are in "
        f"[`{JSON_NAME}`]({JSON_NAME}).",
        "",
        f"Run on {context['finished']}, wall time {context['wall_s'] / 60:.1f} min; "
        f"load average (1 min) {context['load_before']:.1f} at the start, "
        f"{context['load_after']:.1f} at the end.",
        "",
        "```",
        context["command"],
        "```",
        "",
        "## Machine",
        "",
        *machine_lines(),
        "",
        "## Set-up",
        "",
        f"- Data: `{args.data}` from `bench/real_text_pairs.py` (docstrings on this machine: "
        f"first line the anchor, the rest the positive): {context['train_rows']:,} train pairs, "
        f"{context['test_rows']:,} held-out pairs.",
        f"- Student: all-MiniLM-L6-v2's first {STUDENT_LAYERS} layers, mean pooled, normalized; "
        f"the same start for every run; texts cut at {args.max_seq_length} tokens (the "
        "in-process guide and the service cut at the same length).",
        f"- Training: {args.steps} steps of {args.batch_size} (anchor, positive) pairs "
        f"({args.steps * args.batch_size / context['train_rows']:.2f} epochs), no-duplicates "
        f"batch sampler seeded with the run's seed, AdamW at a constant learning rate "
        f"{args.learning_rate:g} without warm-up, GradCache mini-batches of "
        f"{args.mini_batch_size}, temperature {args.temperature:g} for every loss; "
        f"GIST margin {args.margin:g} (absolute) for the three GIST losses. Seeds "
        f"{', '.join(map(str, context['seeds']))}.",
        "- `mnrl` is `CachedMultipleNegativesRankingLoss` with `scale = 1 / temperature` and "
        "GIST's blocks (query_to_doc, query_to_query, doc_to_doc, one joint softmax): GIST with "
        "nothing masked. sentence-transformers' own MNRL defaults (scale 20, query_to_doc only) "
        "would differ from the GIST losses in two more ways.",
        "- `gist`: `CachedGISTEmbedLoss` with the full all-MiniLM-L6-v2 in process as the "
        "guide. `reranker_gist`: `RerankerCachedGISTEmbedLoss` with the service serving "
        "all-MiniLM-L6-v2 (bi-encoder: the same guide behind HTTP). `optimized`: "
        "`OptimizedRerankerCachedGISTEmbedLoss` with its default `RecallBudget()`.",
        f"- Evaluation: `InformationRetrievalEvaluator` (cosine), {n_queries:,} held-out "
        f"queries against the {corpus_words} ({corpus:,} documents); each query's one "
        "relevant document is its own positive. `start` (the untrained student) is evaluated "
        "once and listed under every seed: it does not depend on the seed.",
        "- The service was started once and shared by the reranker-guided runs. Its score and "
        "embedding caches are keyed by the raw strings; to start each reranker-guided run with "
        "cold caches (as a fresh training run would), each appends its own number of spaces "
        "to every training text (the `suffix` column), which MiniLM's tokenizer drops: the "
        "token ids of every text were checked to be identical, so the student, the batches "
        "and the scores are unchanged. Within a run the caches work as in training (later "
        "epochs repeat texts and pairs: the `cache hits` column).",
        "- s/step: the training loop's wall time over its steps (the evaluation not included); "
        "reranker wait: the seconds the loss spent in its reranker calls (its "
        "`RerankerStepStats.wait_seconds`); pairs sent: distinct pairs sent to the service. "
        "The JSON holds run totals for both; the tables below show them per step too. "
        "Service CPU: the CPU seconds of the service's processes (server, engine core, "
        "workers) during the training loop, which for `mnrl` and `gist` is what the idle "
        "service took from the training; load: the 1-minute load average at the start and the "
        "end of the training loop (the machine is shared: the step times depend on it).",
        "",
        "## Results",
        "",
        "Mean ± half-range over the seeds (the half-range is the noise band: with two seeds, "
        "half their difference). A difference smaller than the half-ranges is within the "
        "noise.",
        "",
        *summary_table(results),
        "",
        "Every run:",
        "",
        *runs_table(results, extras),
        "",
        plot_note,
        "",
    ]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def plot(results: Sequence[dict[str, Any]], png: Path) -> str:
    """Quality per loss (error bars: half-range over seeds) and seconds per step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (
            "No plot: matplotlib is not installed in this Python (`pip install matplotlib`, the "
            "`bench` extra); draw it later with `python bench/train_quality.py --plot-only "
            f"{png.with_name(JSON_NAME)}`."
        )
    grouped = by_loss(results)
    names = list(grouped)
    fig, (quality, speed) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=(3, 2))
    width = 0.8 / len(METRICS)
    for k, metric in enumerate(METRICS):
        xs = [i + (k - (len(METRICS) - 1) / 2) * width for i in range(len(names))]
        values = [[row[metric] for row in grouped[n]] for n in names]
        quality.bar(
            xs,
            [statistics.fmean(v) for v in values],
            width,
            yerr=[half_range(v) for v in values],
            capsize=3,
            label=metric,
        )
        for x, v in zip(xs, values):
            quality.scatter([x] * len(v), v, s=8, color="black", zorder=3)
    quality.set_xticks(range(len(names)), names)
    quality.set_ylabel("held-out retrieval (cosine)")
    quality.set_title("Quality: mean, half-range over seeds, dots = seeds")
    quality.legend()
    trained = [n for n in names if n != "start"]
    waits = [
        statistics.fmean(r["reranker_wait_s"] / r["steps"] for r in grouped[n]) for n in trained
    ]
    totals = [statistics.fmean(r["seconds_per_step"] for r in grouped[n]) for n in trained]
    speed.bar(trained, [t - w for t, w in zip(totals, waits)], label="rest of the step")
    speed.bar(trained, waits, bottom=[t - w for t, w in zip(totals, waits)], label="reranker wait")
    speed.set_ylabel("wall seconds per step")
    first = results[0]
    speed.set_title(f"Cost: B={first['batch_size']}, {max(r['steps'] for r in results)} steps")
    speed.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return f"![train quality]({png.name})"


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--eval-queries",
        type=int,
        default=None,
        help="held-out queries to evaluate (default: every test anchor); the corpus is every "
        "test positive",
    )
    parser.add_argument(
        "--eval-corpus",
        type=int,
        default=None,
        help="smoke tests only: evaluate against the first N held-out documents (and their "
        "queries) instead of the whole held-out corpus",
    )
    parser.add_argument(
        "--max-seq-length",
        type=int,
        default=256,
        help="tokens per text for the student, the guide and the service (MiniLM's own: 256)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="directory with real_text_pairs.py's train.jsonl and test.jsonl (written if missing)",
    )
    parser.add_argument("--losses", nargs="+", choices=TRAINED, default=list(TRAINED))
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--temperature", type=float, default=0.01, help="GIST's default")
    parser.add_argument("--margin", type=float, default=0.05, help="absolute GIST margin")
    parser.add_argument("--mini-batch-size", type=int, default=64, help="GradCache mini-batch")
    parser.add_argument(
        "--plot-only",
        type=Path,
        metavar="JSON",
        help="only draw the PNG from a train-quality.json (next to it) and exit",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or args.batch_size < 2:
        parser.error("--seeds and --steps must be >= 1 and --batch-size >= 2")
    for option in ("eval_queries", "eval_corpus"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plot_only:
        results = json.loads(args.plot_only.read_text())["results"]
        print(plot(results, args.plot_only.with_name(PNG_NAME)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started, load_before = time.monotonic(), os.getloadavg()[0]
    ensure_data(args.data)
    train_pairs = read_pairs(args.data / "train.jsonl")
    test_pairs = read_pairs(args.data / "test.jsonl")
    if args.batch_size > len(train_pairs):
        raise SystemExit(f"--batch-size {args.batch_size} > {len(train_pairs)} train pairs")
    seeds = list(range(args.seeds))
    json_path, md_path = args.out_dir / JSON_NAME, args.out_dir / MD_NAME
    print(
        f"data: {len(train_pairs):,} train / {len(test_pairs):,} held-out pairs from {args.data}; "
        f"B={args.batch_size}, {args.steps} steps, seeds {seeds}, losses {args.losses}",
        flush=True,
    )

    from sentence_transformers import SentenceTransformer

    service = None
    with tempfile.TemporaryDirectory(prefix="train-quality-") as tmp:
        if any(name in RERANKER_LOSSES for name in args.losses):
            from _processes import ServerProcess

            # Loads while the start is evaluated; waited for before the first reranker run.
            env = {"PYTHONPATH": f"{ROOT / 'server'}:{ROOT / 'client'}"}
            service = ServerProcess(
                "--model",
                str(minilm_dir()),
                "--dtype",
                "float32",
                log_path=Path(tmp) / "server.log",
                env=env,
            )
        try:
            evaluator = make_evaluator(test_pairs, args.eval_queries, args.eval_corpus)
            start, eval_seconds = evaluate(weak_student(args.max_seq_length), evaluator)
            print(
                "start: "
                + ", ".join(f"{m} {start[m]:.4f}" for m in METRICS)
                + f" ({len(evaluator.queries):,} queries, {len(evaluator.corpus):,} documents, "
                f"evaluated in {eval_seconds:.0f} s)",
                flush=True,
            )
            results: list[dict[str, Any]] = [
                {
                    "loss": "start",
                    "seed": seed,
                    **start,
                    "seconds_per_step": 0.0,
                    "reranker_wait_s": 0.0,
                    "pairs_sent": 0,
                    "steps": 0,
                    "batch_size": args.batch_size,
                }
                for seed in seeds
            ]
            extras: dict[tuple[str, int], Any] = {
                ("start", seed): {"eval_seconds": eval_seconds} for seed in seeds
            }
            write_json(results, json_path)
            guide = None
            if "gist" in args.losses:
                guide = SentenceTransformer(str(minilm_dir()), device="cpu")
                guide.max_seq_length = args.max_seq_length
                guide.eval()
            if service is not None:
                service.wait_ready(timeout=900)
                print(f"service ready at {service.url}", flush=True)
            reranker_runs = 0
            for seed in seeds:
                for name in args.losses:
                    suffix = ""
                    if name in RERANKER_LOSSES:
                        suffix, reranker_runs = " " * reranker_runs, reranker_runs + 1
                    print(f"  {name} seed {seed}: training", flush=True)
                    load_at_start = os.getloadavg()[0]
                    service_cpu = service_cpu_seconds(service)
                    model, row, extra = train_run(
                        name,
                        seed,
                        args,
                        train_pairs,
                        suffix,
                        guide,
                        service.url if service is not None else None,
                    )
                    # What the service's processes used meanwhile (idle, for the runs that do
                    # not call it) and the machine's load: the step times depend on both.
                    extra["service_cpu_s"] = service_cpu_seconds(service) - service_cpu
                    extra["load"] = (load_at_start, os.getloadavg()[0])
                    scores, extra["eval_seconds"] = evaluate(model, evaluator)
                    row.update(scores)
                    results.append(row)
                    extras[(name, seed)] = extra
                    write_json(results, json_path)
                    steps = extra["step_seconds"]
                    later = statistics.median(steps[1:]) if len(steps) > 1 else math.nan
                    print(
                        f"  {name} seed {seed}: "
                        + ", ".join(f"{m} {row[m]:.4f}" for m in METRICS)
                        + f"; {row['seconds_per_step']:.2f} s/step (first step "
                        f"{steps[0]:.2f} s, median of the rest {later:.2f} s), reranker wait "
                        f"{row['reranker_wait_s']:.1f} s, {row['pairs_sent']:,} pairs sent; "
                        f"service CPU {extra['service_cpu_s']:.0f} s; load "
                        f"{extra['load'][0]:.1f} -> {extra['load'][1]:.1f}; "
                        f"evaluated in {extra['eval_seconds']:.0f} s",
                        flush=True,
                    )
        finally:
            if service is not None:
                service.stop()

    plot_note = plot(results, args.out_dir / PNG_NAME)
    context = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
        "wall_s": time.monotonic() - started,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "seeds": seeds,
        "train_rows": len(train_pairs),
        "test_rows": len(test_pairs),
        "eval_queries": len(evaluator.queries),
        "corpus": len(evaluator.corpus),
    }
    text = write_markdown(md_path, results, extras, args, context, plot_note)
    print("\n" + "\n".join(summary_table(results)))
    print(f"\n{plot_note}\nwrote {json_path}, {md_path}" + (f" ({len(text):,} chars)"))


if __name__ == "__main__":
    main()
