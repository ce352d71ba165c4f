"""A model swapped behind the same served name never gets the old model's scores from Redis:
the cache key carries the model's fingerprint (its files and dtype)."""

from __future__ import annotations

import httpx
import pytest
from server_process import ServerProcess
from tiny_models import write_tiny_cross_encoder

pytestmark = pytest.mark.engine

BODY = {"query": "which model answers", "documents": ["the same document", "another one"]}


def _serve_and_rerank(model_dir, redis_url, log_path) -> dict:
    server = ServerProcess(
        "--model",
        str(model_dir),
        "--served-model-name",
        "the-reranker",
        "--dtype",
        "float32",
        "--redis-url",
        redis_url,
        log_path=log_path,
    )
    try:
        server.wait_ready()
        r = httpx.post(f"{server.url}/rerank", json=BODY, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()
    finally:
        server.stop()


def test_a_retrained_model_under_the_same_name_is_not_served_old_scores(tmp_path, redis_server):
    model_dir = tmp_path / "model"
    write_tiny_cross_encoder(model_dir, seed=0)
    first = _serve_and_rerank(model_dir, redis_server.url, tmp_path / "first.log")
    assert first["usage"]["cache_hits"] == 0

    write_tiny_cross_encoder(model_dir, seed=1)  # retrained in place: same path, same name
    second = _serve_and_rerank(model_dir, redis_server.url, tmp_path / "second.log")
    assert second["model"] == first["model"] == "the-reranker"
    assert second["usage"]["cache_hits"] == 0
    raw = {x["index"]: x["raw_score"] for x in first["results"]}
    for x in second["results"]:
        assert x["raw_score"] != pytest.approx(raw[x["index"]], abs=1e-6)

    # Back to the first weights: their scores are still in Redis and are served again.
    write_tiny_cross_encoder(model_dir, seed=0)
    third = _serve_and_rerank(model_dir, redis_server.url, tmp_path / "third.log")
    assert third["usage"]["cache_hits"] == 2
    assert third["results"] == first["results"]
