"""Guide-verified expansion: the candidates that the reranker's own verdicts point to.

A false negative found at ``(block, i, j)`` says that the query text of row ``i`` and the
document text of row ``j`` are about the same thing. The other blocks' candidates between the
same texts (and the texts paired with them) are then likely false negatives too, however the
student ranks them; and "being about the same thing" is roughly transitive. So, once a round of
verdicts is in, the loss can ask about the candidates those verdicts imply:

- *Entities* are the texts of the step, joined when they are the anchor and the positive of one
  row (the training data says they belong together; the GIST threshold is their own score).
  Identical texts (:func:`._texts.identical`) have one id, so they are one entity.
- Every masked candidate (a reranker verdict, never a label) *links* the entities of its query
  and document texts.
- A round proposes, for every entity pair not proposed before, all candidates of every block
  whose query and document texts belong to the pair, in two tiers: direct links and the pairs
  inside one entity (tier 1), then pairs two links apart through a common entity (tier 2; an
  entity with more than ``max_hub`` links is not used as a bridge, so that a loosely linked hub
  does not propose its neighbourhood quadratically). Within a tier the student's score orders
  them, so a budget that cuts the proposal keeps the likeliest.

Links found by one round make the next round's proposals: a chain of verified links is followed
step by step, each step checked by the reranker. Pure (no I/O): the caller sends the proposals
through its judge and feeds the verdicts back with :meth:`VerdictExpansion.add`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from ._candidates import Block, Candidates

#: Most links an entity may have and still bridge two others in tier 2.
MAX_HUB = 32
#: Candidates scored per gather in :meth:`VerdictExpansion._student_score`: small enough that the
#: gathered rows stay in cache (several times faster than 65536 at B=4096), same values.
_SCORE_CHUNK = 1024


class VerdictExpansion:
    """The link graph of one step and the candidates it implies (see the module docstring)."""

    def __init__(
        self,
        normalized: Sequence[Tensor],
        text_ids: Sequence[np.ndarray],
        blocks: Sequence[Block],
        *,
        max_hub: int = MAX_HUB,
    ) -> None:
        self.normalized = list(normalized)
        self.blocks = list(blocks)
        self.batch_size = len(text_ids[0])
        self.max_hub = max_hub
        entity_of_text = _row_entities(text_ids)
        self.n_entities = int(entity_of_text.max()) + 1 if len(entity_of_text) else 0
        self.entity = [entity_of_text[np.asarray(ids)] for ids in text_ids]
        self._members = [_members(e, self.n_entities) for e in self.entity]
        self._own = (self.normalized[0] * self.normalized[1]).sum(-1)
        self.links: dict[int, set[int]] = {}
        self._proposed: set[int] = set()
        self._fresh_links: list[tuple[int, int]] = []
        self._first = True  # the entities' inner pairs are proposed in the first round

    @property
    def pending(self) -> bool:
        """Whether links appeared since the last proposal (or none was made yet)."""
        return self._first or bool(self._fresh_links)

    def add(self, candidates: Candidates, masked: np.ndarray) -> int:
        """Record the masked candidates' links; returns how many links are new."""
        new = 0
        for index in np.unique(candidates.block[masked]).tolist():
            pick = masked & (candidates.block == index)
            block = self.blocks[index]
            query = self.entity[block.query_column][candidates.row[pick]]
            document = self.entity[block.document_column][candidates.col[pick]]
            pairs = np.unique(
                np.minimum(query, document) * self.n_entities + np.maximum(query, document)
            )
            for key in pairs.tolist():
                a, b = divmod(key, self.n_entities)
                if a == b or b in self.links.get(a, ()):
                    continue
                self.links.setdefault(a, set()).add(b)
                self.links.setdefault(b, set()).add(a)
                self._fresh_links.append((a, b))
                new += 1
        return new

    @torch.no_grad()
    def propose(self, scored: np.ndarray | None = None) -> Candidates:
        """The candidates of the entity pairs implied by the links and not proposed before.

        Ordered by tier, then by the student's score (best first). ``scored``: a map over
        ``block * B**2 + row * B + col`` of the candidates already scored, left out (else the
        caller removes them); only the rest are ranked by the student.
        """
        n = self.n_entities
        tier1: set[int] = set()
        if self._first:
            self._first = False
            tier1.update(e * n + e for e in range(n))
        tier2: set[int] = set()
        for a, b in self._fresh_links:
            tier1.update((a * n + b, b * n + a))
            # New two-link pairs: a with b's other links (b the bridge), and b with a's.
            for one, bridge in ((a, b), (b, a)):
                others = self.links[bridge]
                if len(others) > self.max_hub:
                    continue
                direct = self.links[one]
                for c in others:
                    if c != one and c not in direct:
                        tier2.update((one * n + c, c * n + one))
        self._fresh_links = []
        tier2 -= tier1
        parts, tiers = [], []
        for rank, keys in ((1, tier1), (2, tier2)):
            # Each unordered pair once: its candidates are listed both ways round.
            keys = {min(k // n, k % n) * n + max(k // n, k % n) for k in keys}
            fresh = np.fromiter(keys - self._proposed, dtype=np.int64)
            self._proposed |= keys
            if not len(fresh):
                continue
            found = self._candidates_of(fresh // n, fresh % n)
            parts.append(found)
            tiers.append(np.full(len(found), rank, dtype=np.int64))
        if not parts:
            return Candidates.concat([])
        candidates = Candidates.concat(parts)
        tier = np.concatenate(tiers)
        if scored is not None:
            keep = ~scored[candidates.flat_keys(self.batch_size)]
            candidates = Candidates(
                candidates.block[keep], candidates.row[keep], candidates.col[keep]
            )
            tier = tier[keep]
        score = self._student_score(candidates)
        order = np.lexsort((-score, tier))
        return Candidates(candidates.block[order], candidates.row[order], candidates.col[order])

    def _candidates_of(self, first: np.ndarray, second: np.ndarray) -> Candidates:
        """Every block's candidates whose query is in entity ``first`` and document in ``second``
        (and the other way round), the diagonal pairs of ap, aa and pp left out."""
        query_entities = np.concatenate([first, second])
        document_entities = np.concatenate([second, first])
        parts = []
        for index, block in enumerate(self.blocks):
            rows, cols = _product(
                self._members[block.query_column],
                self._members[block.document_column],
                query_entities,
                document_entities,
            )
            if block.has_diagonal_pair:
                keep = rows != cols
                rows, cols = rows[keep], cols[keep]
            parts.append(Candidates(np.full(rows.shape, index, dtype=np.int64), rows, cols))
        merged = Candidates.concat(parts)
        # An undirected pair inside one entity lists its candidates twice.
        _, first_seen = np.unique(merged.flat_keys(self.batch_size), return_index=True)
        first_seen.sort()
        return Candidates(merged.block[first_seen], merged.row[first_seen], merged.col[first_seen])

    def _student_score(self, candidates: Candidates) -> np.ndarray:
        """``cos(query_i, document_j) - cos(anchor_i, positive_i)``, as the budget ranks."""
        out = np.empty(len(candidates), dtype=np.float64)
        for index in np.unique(candidates.block).tolist():
            pick = np.flatnonzero(candidates.block == index)
            block = self.blocks[index]
            rows = torch.as_tensor(candidates.row[pick])
            cols = torch.as_tensor(candidates.col[pick])
            query = self.normalized[block.query_column]
            document = self.normalized[block.document_column]
            score = torch.empty(len(pick), dtype=query.dtype, device=query.device)
            for begin in range(0, len(pick), _SCORE_CHUNK):
                r = rows[begin : begin + _SCORE_CHUNK]
                c = cols[begin : begin + _SCORE_CHUNK]
                similarity = (query[r] * document[c]).sum(-1)
                score[begin : begin + _SCORE_CHUNK] = similarity - self._own[r]
            out[pick] = score.cpu().numpy()
        return out


def _row_entities(text_ids: Sequence[np.ndarray]) -> np.ndarray:
    """Entity of each text id: texts joined when they are one row's anchor and positive."""
    n_texts = int(max(int(ids.max()) for ids in text_ids if len(ids)) + 1)
    anchors, positives = np.asarray(text_ids[0]), np.asarray(text_ids[1])
    graph = coo_matrix((np.ones(len(anchors)), (anchors, positives)), shape=(n_texts, n_texts))
    _, entity = connected_components(graph, directed=False)
    return entity.astype(np.int64)


def _members(entity: np.ndarray, n_entities: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of each entity in one column: (rows sorted by entity, starts, counts)."""
    order = np.argsort(entity, kind="stable")
    counts = np.bincount(entity, minlength=n_entities)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, starts, counts


def _product(
    query_members: tuple[np.ndarray, np.ndarray, np.ndarray],
    document_members: tuple[np.ndarray, np.ndarray, np.ndarray],
    query_entities: np.ndarray,
    document_entities: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """All (row, col) with row in a query entity and col in its document entity, per pair."""
    q_order, q_starts, q_counts = query_members
    d_order, d_starts, d_counts = document_members
    nq, nd = q_counts[query_entities], d_counts[document_entities]
    total = nq * nd
    keep = total > 0
    query_entities, document_entities = query_entities[keep], document_entities[keep]
    nq, nd, total = nq[keep], nd[keep], total[keep]
    if not len(total):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    pair = np.repeat(np.arange(len(total)), total)
    offset = np.arange(int(total.sum())) - np.repeat(np.cumsum(total) - total, total)
    width = nd[pair]
    rows = q_order[q_starts[query_entities[pair]] + offset // width]
    cols = d_order[d_starts[document_entities[pair]] + offset % width]
    return rows.astype(np.int64), cols.astype(np.int64)
