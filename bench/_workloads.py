"""The benchmark's workloads: the same pairs for every system, made from a fixed seed.

Every text carries a tag. Within one workload the structure (text lengths, words, document counts)
is fixed by the seed; the tag changes per repetition, per concurrency level and per pass, so that
no repetition is answered from the service's score cache unless repetition is the point (the
training "repeat" pass). The words are random, so the scores mean nothing; what matters is the
cost, which follows the number and length of the texts.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

# ~250 common English words: realistic word pieces for the tokenizer, no meaning needed.
_WORDS = """
the of and to in is was for on that with as by at from his her they this which be are had have
not but were an their one all she there been has more its when who would will about if out can
time other into some than them these so two may first only new also after years city between
world under during system used made because over through such most many state part where water
river school number three both while early century later music known large known work since
government people against around united city national high found each several called history
house family film until four small long began being south north based west east form area group
second company land main around field party local name game public power population before
language member major city played series following season body light market river modern place
station design energy health court result common general island natural human church science
police trade voice union south range forest model policy region access plant track record price
paper income video sound board bridge level travel ocean metal glass stone growth engine signal
memory network server client cache query answer document question fact river mountain valley
harbor tower castle garden museum library theatre market village county coast desert island
""".split()

INSTRUCTIONS = (
    "query: ",
    "search_query: ",
    "question: ",
    "Represent this sentence for searching relevant passages: ",
)


def _tag(*parts: object) -> str:
    rng = random.Random("tag:" + ":".join(map(str, parts)))
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=6))


def _text(rng: random.Random, low: int, high: int) -> list[str]:
    return rng.choices(_WORDS, k=rng.randint(low, high))


def _tagged(words: list[str], tag: str) -> str:
    return " ".join([tag, *words])


@dataclass
class OnlineRequest:
    query: str
    documents: list[str]
    instruction: str | None = None
    max_length: int | None = None

    @property
    def pairs(self) -> int:
        return len(self.documents)


@dataclass
class TrainingPass:
    """One /rerank_batch_simple body: texts once, pairs by index."""

    name: str
    queries: list[str]
    documents: list[str]
    pairs: list[tuple[int, int]]
    #: pairs that an earlier pass of the same repetition already sent (the cache's share)
    repeated: int = 0
    notes: dict = field(default_factory=dict)

    def zipped(self) -> tuple[list[str], list[str]]:
        """The same pairs as the N->N lists that vLLM's /score and LLM.score take."""
        return [self.queries[q] for q, _ in self.pairs], [self.documents[d] for _, d in self.pairs]


@dataclass
class Sizes:
    #: requests per repetition at each concurrency level: at least the concurrency itself, so
    #: that every level really has that many requests in flight at its start
    online_requests: dict[int, int]
    docs_low: int
    docs_high: int
    anchors: int
    candidates: int
    mixed_requests: int
    mixed_concurrency: int = 8
    max_lengths: tuple[int, int] = (64, 256)

    @property
    def concurrency(self) -> tuple[int, ...]:
        return tuple(self.online_requests)


FULL = Sizes(
    online_requests={1: 12, 8: 16, 32: 32},
    docs_low=20,
    docs_high=100,
    anchors=64,
    candidates=64,
    mixed_requests=16,
)
QUICK = Sizes(
    online_requests={1: 3, 8: 4, 32: 4},
    docs_low=20,
    docs_high=40,
    anchors=16,
    candidates=16,
    mixed_requests=8,
)


def online_requests(sizes: Sizes, seed: int, level: int, *tag_parts: object) -> list[OnlineRequest]:
    """One query x ``docs_low..docs_high`` documents per request. The levels' request sets share
    their structure (a smaller set is the start of a larger one) and differ in their tag."""
    rng = random.Random(f"{seed}:online")
    tag = _tag(seed, "online", level, *tag_parts)
    out = []
    for _ in range(sizes.online_requests[level]):
        query = _tagged(_text(rng, 5, 12), tag)
        n_docs = rng.randint(sizes.docs_low, sizes.docs_high)
        docs = [_tagged(_text(rng, 15, 50), tag) for _ in range(n_docs)]
        out.append(OnlineRequest(query, docs))
    return out


def mixed_requests(sizes: Sizes, seed: int, *tag_parts: object) -> list[OnlineRequest]:
    """Online-shaped requests spread evenly over 4 instructions x 2 max_lengths."""
    rng = random.Random(f"{seed}:mixed")
    tag = _tag(seed, "mixed", *tag_parts)
    out = []
    for i in range(sizes.mixed_requests):
        query = _tagged(_text(rng, 5, 12), tag)
        n_docs = rng.randint(sizes.docs_low, sizes.docs_high)
        docs = [_tagged(_text(rng, 15, 50), tag) for _ in range(n_docs)]
        out.append(
            OnlineRequest(
                query,
                docs,
                instruction=INSTRUCTIONS[i % len(INSTRUCTIONS)],
                max_length=sizes.max_lengths[(i // len(INSTRUCTIONS)) % len(sizes.max_lengths)],
            )
        )
    return out


def _training_texts(sizes: Sizes, seed: int, tag: str) -> tuple[list[str], list[str]]:
    rng = random.Random(f"{seed}:training")
    anchors = [_tagged(_text(rng, 5, 12), tag) for _ in range(sizes.anchors)]
    candidates = [_tagged(_text(rng, 15, 50), tag) for _ in range(sizes.candidates)]
    return anchors, candidates


def training_passes(sizes: Sizes, seed: int, *tag_parts: object) -> list[TrainingPass]:
    """The three training passes of one repetition, in the order they must be sent.

    - ``fresh``: anchors x candidates, all new;
    - ``repeat``: the same candidates, half the anchors kept from ``fresh`` and half new, so
      exactly 50% of the pairs were sent before (the cache's case);
    - ``dup``: new texts, half the anchors x the candidates, each pair sent twice in the request.
    """
    a, c = sizes.anchors, sizes.candidates
    anchors, candidates = _training_texts(sizes, seed, _tag(seed, "train", *tag_parts))
    product = [(i, j) for i in range(a) for j in range(c)]
    fresh = TrainingPass("fresh", anchors, candidates, product)

    new_anchors, _ = _training_texts(sizes, seed + 1, _tag(seed, "train-new", *tag_parts))
    kept = a // 2
    repeat_queries = anchors[:kept] + new_anchors[kept:]
    repeat = TrainingPass("repeat", repeat_queries, candidates, product, repeated=kept * c)

    dup_anchors, dup_candidates = _training_texts(sizes, seed, _tag(seed, "dup", *tag_parts))
    half = [(i, j) for i in range(a // 2) for j in range(c)]
    shuffled = list(half)
    random.Random(f"{seed}:dup-order").shuffle(shuffled)
    dup = TrainingPass("dup", dup_anchors[: a // 2], dup_candidates, half + shuffled)
    dup.notes["distinct_pairs"] = len(half)
    return [fresh, repeat, dup]


def warmup_requests(sizes: Sizes, seed: int) -> tuple[list[OnlineRequest], TrainingPass]:
    """Texts no measured pass uses, to warm engines and servers up."""
    online = online_requests(sizes, seed + 1000, sizes.concurrency[-1], "warmup")[:4]
    small = Sizes(**{**sizes.__dict__, "anchors": 8, "candidates": 32})
    train = training_passes(small, seed + 1000, "warmup")[0]
    return online, train
