"""Fair scheduling through the real server and engine (issue 16).

Four training clients keep ``/rerank_batch_simple`` requests of two batches each queued, with the
default instruction and max_length, so they share one group with an online ``/rerank`` sent with
the defaults. The online request must be answered after the batches in flight and its own, not
after the whole backlog (main: 3 s on the bi-encoder, ~60 s on a cross-encoder), and the
training stream must lose almost nothing.

How the throughput claim is kept robust on a noisy shared machine: it is not a ratio of two
wall-clock rates measured a few seconds apart (another engineer's job on the same two cores moves
those by more than 5%). What the online traffic can take from training is room in the engine's
batches, so the test compares *training pairs per engine batch* with and without online traffic,
read from the server's own counters. The wall-clock rates are printed for the record.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from server_process import ServerProcess, metric_samples
from tiny_models import MINILM_DIR, copy_tokenizer

pytestmark = pytest.mark.engine

TRAINING_CLIENTS = 4
IN_FLIGHT = 1  # the service's default for the in-process engine


def write_minilm_cross_encoder(target: Path, seed: int = 0) -> Path:
    """all-MiniLM-L6-v2's encoder under a random one-label head: a cross-encoder with the
    compute cost of a real MiniLM-L6 one (the issue's case), unlike the 2-layer tiny model whose
    batches are so cheap that HTTP and tokenisation dominate."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(MINILM_DIR, num_labels=1)
    model.config.architectures = ["BertForSequenceClassification"]
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    copy_tokenizer(target)
    return target


@pytest.fixture(scope="module")
def minilm_cross_encoder(tmp_path_factory) -> Iterator[ServerProcess]:
    """A MiniLM-L6 cross-encoder with the service's defaults (batch size, batches in flight)."""
    tmp = tmp_path_factory.mktemp("fair")
    server = ServerProcess(
        "--model",
        str(write_minilm_cross_encoder(tmp / "minilm-cross-encoder")),
        "--dtype",
        "float32",
        log_path=tmp / "server.log",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclass
class Counters:
    at: float
    batches: float
    pairs: float

    @classmethod
    def read(cls, url: str) -> Counters:
        m = metric_samples(url)
        return cls(
            time.monotonic(),
            m[("reranker_engine_batch_pairs_count", ())],
            m[("reranker_pairs_scored_total", ())],
        )


class TrainingStream:
    """``TRAINING_CLIENTS`` threads, each with one request of ``pairs`` fresh pairs in flight."""

    def __init__(self, url: str, pairs: int) -> None:
        self.url, self.pairs = url, pairs
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client) for _ in range(TRAINING_CLIENTS)]

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=300) as c:
            while not self.stop.is_set():
                tag = uuid.uuid4().hex  # fresh pairs: the engine, not the cache, answers
                body = {
                    "queries": [f"training query {tag}"],
                    "documents": [
                        f"candidate passage {i} for step {tag}" for i in range(self.pairs)
                    ],
                    "pairs": [[0, i] for i in range(self.pairs)],
                }
                r = c.post("/rerank_batch_simple", json=body)
                if r.status_code != 200:
                    self.failures.append(r.text)

    def __enter__(self) -> TrainingStream:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _online(url: str, i: int, instruction: str | None = None) -> float:
    body: dict = {
        "query": f"online question {i} {uuid.uuid4().hex}",
        "documents": ["the first candidate answer", "the second candidate answer"],
    }
    if instruction is not None:
        body["instruction"] = instruction
    started = time.monotonic()
    r = httpx.post(f"{url}/rerank", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return time.monotonic() - started


def _check_fair_under_training(url: str, batch_pairs: int, rounds: int) -> None:
    _online(url, -1)  # warm
    # What an online request costs with no queue (HTTP, tokenising, one engine call): on a shared
    # two-core machine this grows with the load beside the test, so it is measured, not assumed.
    idle_s = min(_online(url, -2 - i) for i in range(3))
    with TrainingStream(url, 2 * batch_pairs) as stream:
        while Counters.read(url).batches < 3:  # the stream is flowing
            time.sleep(0.2)
        a0 = Counters.read(url)
        while (a1 := Counters.read(url)).batches < a0.batches + 4:  # training alone
            time.sleep(0.2)
        latencies = []
        for i in range(rounds):
            latencies.append(_online(url, i))
            time.sleep(0.3)
        b1 = Counters.read(url)  # training with online traffic
        depth = metric_samples(url)[("reranker_queue_depth_pairs", ())]
    assert stream.failures == []
    assert depth > 0, "the stream had drained, so this did not test sustained load"
    alone_batches = a1.batches - a0.batches
    assert alone_batches >= 2, "too few batches to measure"
    # One batch's engine time, as training alone sees it (batches are serial in the engine).
    batch_s = (a1.at - a0.at) / alone_batches
    per_batch_alone = (a1.pairs - a0.pairs) / alone_batches
    online_pairs = 2 * rounds
    per_batch_mixed = (b1.pairs - a1.pairs - online_pairs) / (b1.batches - a1.batches)
    rate_alone = (a1.pairs - a0.pairs) / (a1.at - a0.at)
    rate_mixed = (b1.pairs - a1.pairs - online_pairs) / (b1.at - a1.at)
    print(
        f"batch {batch_s:.3f} s alone, {(b1.at - a1.at) / (b1.batches - a1.batches):.3f} s "
        f"with online; online {[round(x, 3) for x in latencies]} s "
        f"= {max(latencies) / batch_s:.2f} batch times at most (idle {idle_s:.3f} s); "
        f"training pairs/batch "
        f"{per_batch_alone:.1f} alone, {per_batch_mixed:.1f} with online "
        f"({per_batch_mixed / per_batch_alone:.3f}x); training pairs/s {rate_alone:.1f} alone, "
        f"{rate_mixed:.1f} with online ({rate_mixed / rate_alone:.3f}x, wall clock, for the record)"
    )
    assert per_batch_alone >= 0.95 * batch_pairs, "training alone did not fill the batches"
    assert per_batch_mixed >= 0.95 * per_batch_alone
    # First-in-first-out, it would wait for the batch in flight and the whole backlog (the four
    # clients' queued requests: 8 batches here), about 9 batch times. Fair, it waits for the
    # batch in flight, then its own: 2 at most (the target). Measured on a shared two-core
    # machine (MiniLM cross-encoder, 2026-12-02, probe of 16 requests): 1.4-2.1 batch times, one
    # 3.0. The bound leaves room for that machine's noise: 4 batch times (as training alone sees
    # them, or the window's mean if longer) plus the request's idle cost and 0.5 s.
    batch_mean_s = (b1.at - a0.at) / (b1.batches - a0.batches)
    bound = (IN_FLIGHT + 3) * max(batch_s, batch_mean_s) + idle_s + 0.5
    assert max(latencies) <= bound, (latencies, batch_mean_s)


def test_bi_encoder_online_request_in_the_training_group_is_answered_after_the_batches_in_flight(
    minilm_server,
):
    _check_fair_under_training(minilm_server.url, batch_pairs=256, rounds=3)


def test_cross_encoder_online_request_in_the_training_group_is_answered_after_the_batches_in_flight(
    minilm_cross_encoder,
):
    _check_fair_under_training(minilm_cross_encoder.url, batch_pairs=256, rounds=3)


def test_priority_is_taken_on_native_and_vllm_routes_and_its_wait_is_reported(minilm_server):
    url = minilm_server.url
    simple = {"queries": ["q"], "documents": [f"d {uuid.uuid4().hex}"], "pairs": [[0, 0]]}
    r = httpx.post(f"{url}/rerank_batch_simple", json={**simple, "priority": "urgent"})
    assert r.status_code == 422 and "priority" in r.text, r.text
    r = httpx.post(f"{url}/rerank_batch_simple", json={**simple, "priority": 7}, timeout=60)
    assert r.status_code == 200, r.text
    body = {"query": "q", "documents": [f"v {uuid.uuid4().hex}"], "priority": -3}
    r = httpx.post(f"{url}/v1/rerank", json=body, timeout=60)
    assert r.status_code == 200, r.text
    m = metric_samples(url)
    for label in ("7", "-3"):
        assert m[("reranker_queue_wait_seconds_count", (("priority", label),))] >= 1
    assert m[("reranker_queue_requests_waiting", ())] == 0
