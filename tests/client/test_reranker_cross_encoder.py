"""RerankerCrossEncoder: CrossEncoder.predict's contract, against a fake server (routing and
return types) and against the real service on MiniLM (scores and hard-negative mining)."""

from __future__ import annotations

import inspect
import json
import threading

import httpx
import numpy as np
import pytest
import torch
from reranker_client import RerankerClient, RerankerCrossEncoder

# ---------------------------------------------------------------------------------------------
# Fast tests: a fake /rerank_batch_simple that scores a pair by the length of its two texts.


def _fake_score(query: str, document: str) -> float:
    return len(query) + len(document) / 1000


class FakeServer:
    """A fake service: records the pairs it was sent and answers with `_fake_score`."""

    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if self.fail_first:
                self.fail_first -= 1
                return httpx.Response(503, json={"detail": "busy"})
        body = json.loads(request.content)
        pairs = [(body["queries"][i], body["documents"][j]) for i, j in body["pairs"]]
        with self.lock:
            self.sent.extend(pairs)
        return httpx.Response(
            200,
            json={
                "scores": [_fake_score(q, d) for q, d in pairs],
                "usage": {"pairs": len(pairs)},
            },
        )


def _adapter(server: FakeServer, **kw) -> RerankerCrossEncoder:
    # A batch size is given so the client never asks the fake for /info.
    client = RerankerClient(
        "http://fake",
        transport=httpx.MockTransport(server),
        backoff_base=0,
        reranker_batch_size=1000,
    )
    return RerankerCrossEncoder(client=client, **kw)


PAIRS = [("what is a cat", f"document number {i}") for i in range(10)]


def test_predict_mirrors_cross_encoder_signature():
    from sentence_transformers import CrossEncoder

    theirs = inspect.signature(CrossEncoder.predict).parameters
    ours = inspect.signature(RerankerCrossEncoder.predict).parameters
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].default == theirs[name].default, name


def test_scores_in_input_order_duplicates_sent_once():
    server = FakeServer()
    pairs = PAIRS + PAIRS[:4] + [PAIRS[2]]
    ce = _adapter(server, chunk_pairs=3, max_concurrency=3)
    scores = ce.predict(pairs)
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, [_fake_score(q, d) for q, d in pairs], rtol=1e-6)
    assert sorted(server.sent) == sorted(PAIRS)  # each distinct pair once, split in chunks


def test_cache_answers_repeated_pairs_without_a_request():
    server = FakeServer()
    ce = _adapter(server)
    first = ce.predict(PAIRS[:6])
    second = ce.predict(PAIRS[3:])
    assert len(server.sent) == len(PAIRS)  # PAIRS[3:6] came from the cache
    assert ce.cache_hits == 3
    np.testing.assert_array_equal(first[3:], second[:3])


def test_cache_is_bounded():
    server = FakeServer()
    ce = _adapter(server, cache_size=4)
    ce.predict(PAIRS)
    ce.predict(PAIRS[:1])
    assert len(server.sent) == len(PAIRS) + 1  # PAIRS[0] was evicted


def test_return_types_and_activation():
    ce = _adapter(FakeServer())
    tensor = ce.predict(PAIRS[:3], convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (3,)
    listed = ce.predict(PAIRS[:3], convert_to_numpy=False)
    assert isinstance(listed, list) and all(isinstance(t, torch.Tensor) for t in listed)
    single = ce.predict(PAIRS[0])
    assert float(single) == pytest.approx(_fake_score(*PAIRS[0]))
    squashed = ce.predict(PAIRS[:3], activation_fn=torch.sigmoid)
    np.testing.assert_allclose(squashed, torch.sigmoid(tensor).numpy(), rtol=1e-6)


def test_transient_failures_are_retried():
    server = FakeServer(fail_first=2)
    ce = _adapter(server)
    np.testing.assert_allclose(
        ce.predict(PAIRS[:2]), [_fake_score(*p) for p in PAIRS[:2]], rtol=1e-6
    )
    assert ce.client.stats.retries == 2


def test_progress_bar_counts_pairs(capsys):
    ce = _adapter(FakeServer(), chunk_pairs=4)
    ce.predict(PAIRS, show_progress_bar=True)
    assert "10/10" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"prompt": "Query: "}, "instruction="), ({"batch_size": 0}, "batch_size")],
)
def test_bad_arguments_say_what_to_do(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _adapter(FakeServer()).predict(PAIRS, **kwargs)


def test_a_pair_that_is_not_two_strings_is_named():
    with pytest.raises(ValueError, match="pair of strings"):
        _adapter(FakeServer()).predict([("a", "b"), ("only one",)])
