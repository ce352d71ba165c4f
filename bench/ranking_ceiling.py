"""How much of the guide's false negatives a student's ranking can reach, whatever the loss does.

The optimized loss ranks candidates by what the student says of them and sends the top to the
reranker. How far down the plain loss's false negatives lie in such a ranking bounds what any
selection from that student can keep at a budget. For one batch of ``loss_bill``'s data (the
same batches, students and guide stand-in), this prints the share of the false negatives within
the top 1-4% of 3B² of one global ranking of all four blocks' candidates (candidates whose two
texts are identical are left out: the loss masks them without a call, and ``loss_bill``'s count
includes them as "identity"), by:

- ``oracle``: the guide's own margin over each anchor's cutoff (a perfect ranking);
- ``margin``: the student's score less its score of the anchor's own positive (what a loss that
  knows nothing of the guide can rank by);
- ``calibrated``: the student's score mapped onto the guide's scale by a linear fit per block on
  a random sample of 0.05% of the candidates, against each anchor's exact cutoff, as a z-score
  (the optimized loss's first ranking, without its later rounds).

Run: ``.venv/bin/python bench/ranking_ceiling.py --data FILE.jsonl --batch-size 2048 --seed 0``
(no ``--data``: the templated set). The loss's own figures at the same budget are
``loss_bill``'s; docs/loss-recall.md puts the two side by side.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from loss_bill import MARGIN, STUDENTS, load_rows, sample_rows, sample_triples, students_of
from loss_bill import text_set as templated_set
from reranker_client.losses._candidates import Block, loss_blocks

SHARES = (0.01, 0.02, 0.03, 0.04)
CALIBRATION_SHARE = 0.0005


def block_scores(embeddings: np.ndarray, id_columns, blocks: Sequence[Block]) -> np.ndarray:
    """``blocks x B x B`` cosine scores of each block's (query, document) texts."""
    return np.stack(
        [
            embeddings[id_columns[b.query_column]] @ embeddings[id_columns[b.document_column]].T
            for b in blocks
        ]
    )


def valid_candidates(id_columns, blocks: Sequence[Block]) -> np.ndarray:
    """Candidates a loss may ask about: not a diagonal pair, not a text against itself."""
    valid = np.stack(
        [
            id_columns[b.query_column][:, None] != id_columns[b.document_column][None, :]
            for b in blocks
        ]
    )
    for index, block in enumerate(blocks):
        if block.has_diagonal_pair:
            np.fill_diagonal(valid[index], False)
    return valid


def reach(score: np.ndarray, false_negatives: np.ndarray, valid: np.ndarray, budgets) -> list:
    """Share of ``false_negatives`` within the top ``k`` valid candidates by ``score``, per k."""
    total = int(false_negatives.sum())
    flat = np.where(valid, score, -np.inf).ravel()
    deepest = min(max(budgets), flat.size)
    top = np.argpartition(-flat, deepest - 1)[:deepest]
    found = np.cumsum(false_negatives.ravel()[top[np.argsort(-flat[top], kind="stable")]])
    return [float(found[min(k, deepest) - 1]) / total if total else 1.0 for k in budgets]


def calibrated_z(
    student: np.ndarray, guide: np.ndarray, cutoffs: np.ndarray, valid: np.ndarray, seed: int
) -> np.ndarray:
    """Per block, a linear fit of the guide's score on the student's over a random sample,
    then ``(fit - cutoff) / residual sd``."""
    rng = np.random.default_rng(seed)
    z = np.empty_like(student)
    n = max(16, int(CALIBRATION_SHARE * student[0].size))
    for index in range(student.shape[0]):
        pick = rng.choice(np.flatnonzero(valid[index].ravel()), n, replace=False)
        x, y = student[index].ravel()[pick], guide[index].ravel()[pick]
        slope, intercept = np.polyfit(x, y, 1)
        sigma = max(float(np.std(y - (slope * x + intercept))), 1e-6)
        z[index] = (slope * student[index] + intercept - cutoffs[:, None]) / sigma
    return z


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help='a {"anchor", "positive"} jsonl (loss_bill)')
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.data:
        texts, rows = load_rows(args.data)
        id_columns = sample_rows(args.batch_size, rows, args.seed)
    else:
        texts, questions, passages = templated_set()
        id_columns = sample_triples(args.batch_size, questions, passages, args.seed)
    students = students_of(texts)
    blocks = loss_blocks(3, contrast_anchors=True, contrast_positives=True)
    guide_emb = students["same"]
    cutoffs = np.einsum("ij,ij->i", guide_emb[id_columns[0]], guide_emb[id_columns[1]]) - MARGIN
    guide = block_scores(guide_emb, id_columns, blocks)
    valid = valid_candidates(id_columns, blocks)
    false_negatives = (guide > cutoffs[None, :, None]) & valid
    three = 3 * args.batch_size**2
    budgets = [int(share * three) for share in SHARES]
    print(
        f"B={args.batch_size} seed {args.seed}: {int(false_negatives.sum()):,} false negatives "
        f"({false_negatives.sum() / three:.2%} of 3B²); share of them in the top of each ranking"
    )
    print(f"{'ranking':>22} | " + " | ".join(f"{s:>6.0%}" for s in SHARES))
    rows_out = [("oracle", guide - cutoffs[None, :, None])]
    for name in STUDENTS:
        if name == "same":
            continue
        emb = students[name]
        student = block_scores(emb, id_columns, blocks)
        own = np.einsum("ij,ij->i", emb[id_columns[0]], emb[id_columns[1]])
        rows_out.append((f"{name}: margin", student - own[None, :, None]))
        rows_out.append(
            (f"{name}: calibrated", calibrated_z(student, guide, cutoffs, valid, args.seed))
        )
    for name, score in rows_out:
        shares = reach(score, false_negatives, valid, budgets)
        print(f"{name:>22} | " + " | ".join(f"{s:>6.1%}" for s in shares), flush=True)


if __name__ == "__main__":
    main()
