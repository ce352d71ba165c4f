"""The HTTP API through the real server on the real engine, serving the embedded default model
(all-MiniLM-L6-v2, a bi-encoder), once with the engine in process and once behind `vllm serve`."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.engine

QUERY = "What is the capital of France?"
DOCS = [
    "Berlin is the capital of Germany.",
    "Paris is the capital and largest city of France.",
    "Bananas are rich in potassium.",
    "The Eiffel Tower is a landmark in Paris.",
]


@pytest.fixture(scope="module")
def st_model(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


def st_scores(st_model, pairs, instruction=None):
    """sentence-transformers' cosine similarity for each (query, document) pair."""
    from sentence_transformers.util import cos_sim

    qs = st_model.encode([(instruction or "") + q for q, _ in pairs], convert_to_tensor=True)
    ds = st_model.encode([d for _, d in pairs], convert_to_tensor=True)
    return [float(cos_sim(qs[i], ds[i])) for i in range(len(pairs))]


def unique(text: str) -> str:
    """Text no earlier test has sent, so the score cache cannot answer it."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def metric_samples(http: httpx.Client) -> dict[tuple[str, tuple], float]:
    text = http.get("/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_rerank_returns_sorted_results_indexing_the_request(http, st_model):
    r = http.post("/rerank", json={"query": QUERY, "documents": DOCS, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    results = body["results"]
    assert sorted(x["index"] for x in results) == list(range(len(DOCS)))
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0]["index"] == 1  # the Paris sentence
    for x in results:
        assert x["document"] == {"text": DOCS[x["index"]]}
    expected = st_scores(st_model, [(QUERY, d) for d in DOCS])
    for x in results:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-4)
    assert body["usage"]["pairs"] == len(DOCS)


def test_top_n_and_documents_omitted_by_default(http):
    r = http.post("/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2})
    results = r.json()["results"]
    assert len(results) == 2 and results[0]["index"] == 1
    assert all("document" not in x for x in results)


def test_scores_equal_sentence_transformers_cosine(http, st_model):
    long_doc = " ".join(["The river flows through the old town and past the cathedral."] * 60)
    queries = ["how do plants make food", "capital of Japan", "fast sports cars"]
    documents = [
        "Photosynthesis turns light, water and carbon dioxide into sugar.",
        "Tokyo is the capital of Japan.",
        long_doc,  # longer than the model's 256 tokens: both sides must truncate alike
        "A Ferrari can exceed 300 km/h.",
    ]
    pairs = [[qi, dj] for qi in range(len(queries)) for dj in range(len(documents))]
    for instruction in (None, "query: "):
        r = http.post(
            "/rerank_batch_simple",
            json={
                "queries": queries,
                "documents": documents,
                "pairs": pairs,
                "instruction": instruction,
            },
        )
        assert r.status_code == 200, r.text
        got = r.json()["scores"]
        want = st_scores(st_model, [(queries[q], documents[d]) for q, d in pairs], instruction)
        assert got == pytest.approx(want, abs=1e-4)


def test_instruction_changes_bi_encoder_query(http):
    body = {"queries": [QUERY], "documents": DOCS[:2], "pairs": [[0, 0], [0, 1]]}
    plain = http.post("/rerank_batch_simple", json=body).json()["scores"]
    instructed = http.post(
        "/rerank_batch_simple", json={**body, "instruction": "Represent this for retrieval: "}
    ).json()["scores"]
    assert plain != pytest.approx(instructed, abs=1e-4)


def test_score_does_not_depend_on_batch_or_cache(http):
    # max_length 200 and 201 give identical engine inputs for a short pair but different cache
    # keys, so the same pair is scored by the engine twice: once alone, once inside a batch.
    q, d = unique("which city hosts the Louvre"), unique("The Louvre museum is in Paris.")
    alone = http.post("/rerank", json={"query": q, "documents": [d], "max_length": 200}).json()
    fillers = [unique(f"filler document number {i} about various topics") for i in range(300)]
    batched = http.post(
        "/rerank",
        json={"query": q, "documents": fillers[:150] + [d] + fillers[150:], "max_length": 201},
    ).json()
    cached = http.post("/rerank", json={"query": q, "documents": [d], "max_length": 200}).json()
    assert alone["usage"]["cache_hits"] == 0 and batched["usage"]["cache_hits"] == 0
    assert cached["usage"]["cache_hits"] == 1
    s_alone = alone["results"][0]["relevance_score"]
    s_batched = next(x for x in batched["results"] if x["index"] == 150)["relevance_score"]
    assert s_batched == pytest.approx(s_alone, abs=1e-5)
    assert cached["results"][0]["relevance_score"] == s_alone


def test_rerank_batch_groups_instructions_without_mixing(http):
    instructions = ["query: ", "Find the answer: ", "search_query: "]
    requests = [
        {"query": unique(QUERY), "documents": DOCS, "instruction": ins, "max_length": 128}
        for ins in instructions
    ]
    r = http.post("/rerank_batch", json={"requests": requests})
    assert r.status_code == 200, r.text
    batch_results = r.json()["results"]
    assert len(batch_results) == 3
    # Each request alone, with a different max_length (same engine input for these short texts,
    # different cache key) so the engine scores it afresh rather than the cache answering.
    per_request = []
    for req, got in zip(requests, batch_results):
        alone = http.post("/rerank", json={**req, "max_length": 127}).json()
        assert alone["usage"]["cache_hits"] == 0
        want = {x["index"]: x["relevance_score"] for x in alone["results"]}
        have = {x["index"]: x["relevance_score"] for x in got["results"]}
        assert have.keys() == want.keys()
        for i in want:
            assert have[i] == pytest.approx(want[i], abs=1e-5)
        per_request.append(have)
    # The instructions really were applied separately: the three requests' scores differ.
    assert per_request[0][0] != pytest.approx(per_request[1][0], abs=1e-4)
    assert per_request[1][0] != pytest.approx(per_request[2][0], abs=1e-4)


def test_cache_hits_reported_on_repeat(http):
    docs = [unique(d) for d in DOCS]
    first = http.post("/rerank", json={"query": QUERY, "documents": docs}).json()
    again = http.post("/rerank", json={"query": QUERY, "documents": docs}).json()
    assert first["usage"]["cache_hits"] == 0
    assert again["usage"]["cache_hits"] == len(docs)
    assert again["results"] == first["results"]


def test_duplicate_pairs_in_one_request_scored_once(http):
    before = metric_samples(http)
    docs = [unique("a duplicated document"), unique("another document")]
    pairs = [[0, 0], [0, 1], [0, 0], [0, 0], [0, 1]]
    r = http.post(
        "/rerank_batch_simple", json={"queries": [QUERY], "documents": docs, "pairs": pairs}
    )
    scores = r.json()["scores"]
    assert scores[0] == scores[2] == scores[3] and scores[1] == scores[4]
    after = metric_samples(http)
    scored = (
        after[("reranker_pairs_scored_total", ())] - before[("reranker_pairs_scored_total", ())]
    )
    assert scored == 2


async def test_fifty_concurrent_mixed_requests_get_their_own_results(api_server, st_model):
    instructions = [None, "query: ", "question: "]
    jobs = []
    for i in range(50):
        ins = instructions[i % 3]
        q = f"request {i}: which document mentions number {i % 7}?"
        docs = [f"document about number {(i + k) % 7} and topic {k}" for k in range(3 + i % 4)]
        jobs.append((i, ins, q, docs))

    async def one(client: httpx.AsyncClient, i, ins, q, docs):
        if i % 2:
            r = await client.post(
                "/rerank", json={"query": q, "documents": docs, "instruction": ins}
            )
            r.raise_for_status()
            by_index = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
            return [by_index[k] for k in range(len(docs))]
        r = await client.post(
            "/rerank_batch_simple",
            json={
                "queries": [q],
                "documents": docs,
                "pairs": [[0, k] for k in range(len(docs))],
                "instruction": ins,
            },
        )
        r.raise_for_status()
        return r.json()["scores"]

    async with httpx.AsyncClient(base_url=api_server.url, timeout=120) as client:
        got = await asyncio.gather(*(one(client, *job) for job in jobs))
    for (i, ins, q, docs), scores in zip(jobs, got):
        want = st_scores(st_model, [(q, d) for d in docs], ins)
        assert scores == pytest.approx(want, abs=1e-4), f"request {i}"


def test_health_stays_fast_while_a_large_request_is_scored(http, api_server):
    docs = [unique(f"passage {i} on a subject of its own") for i in range(2000)]
    outcome: dict[str, object] = {}

    def big_request() -> None:
        with httpx.Client(base_url=api_server.url, timeout=300) as c:
            outcome["response"] = c.post("/rerank", json={"query": QUERY, "documents": docs})

    worker = threading.Thread(target=big_request)
    worker.start()
    time.sleep(0.5)  # let the request reach the engine
    latencies = []
    while worker.is_alive() and len(latencies) < 20:
        started = time.perf_counter()
        r = http.get("/health")
        latencies.append(time.perf_counter() - started)
        assert r.status_code == 200
        time.sleep(0.1)
    worker.join()
    assert len(latencies) >= 5, "the large request finished too soon to measure anything"
    assert max(latencies) < 0.2, latencies
    response = outcome["response"]
    assert response.status_code == 200 and len(response.json()["results"]) == 2000


@pytest.mark.parametrize(
    ("endpoint", "body", "message"),
    [
        ("/rerank", {"query": "", "documents": ["a"]}, "query is empty"),
        ("/rerank", {"query": "   ", "documents": ["a"]}, "query is empty"),
        ("/rerank", {"query": "q", "documents": []}, "documents"),
        (
            "/rerank",
            {"query": "q", "documents": ["a", 3]},
            "documents[1]: Input should be a valid string",
        ),
        ("/rerank", {"query": "q", "documents": ["a", ""]}, "documents[1] is empty"),
        ("/rerank", {"query": "q"}, "documents: Field required"),
        (
            "/rerank",
            {"query": "q", "documents": ["a"], "max_length": 100000},
            "above this model's limit of 256",
        ),
        ("/rerank", {"query": "q", "documents": ["a"], "max_length": 0}, "max_length"),
        ("/rerank", {"query": "q", "documents": ["a"], "top_n": -1}, "top_n"),
        (
            "/rerank",
            {"query": "q", "documents": ["a"], "topn": 1},
            "topn: Extra inputs are not permitted",
        ),
        (
            "/rerank_batch",
            {
                "requests": [
                    {"query": "q", "documents": ["a"]},
                    {"query": "q", "documents": ["a"], "max_length": 9999},
                ]
            },
            "requests[1]: max_length 9999",
        ),
        (
            "/rerank_batch_simple",
            {"queries": ["q"], "documents": ["d"], "pairs": [[0, 1]]},
            "pairs[0] = [0, 1] is out of range",
        ),
        (
            "/rerank_batch_simple",
            {"queries": ["q"], "documents": ["d"], "pairs": [[-1, 0]]},
            "pairs[0][0]: Input should be greater than or equal to 0",
        ),
        (
            "/rerank_batch_simple",
            {"queries": ["q"], "documents": ["d"], "pairs": [[0]]},
            "pairs[0]",
        ),
        (
            "/rerank_batch_simple",
            {"queries": ["q", ""], "documents": ["d"], "pairs": [[0, 0]]},
            "queries[1] is empty",
        ),
        (
            "/rerank_batch_simple",
            {"queries": ["q"], "documents": ["d"], "pairs": [[0, 0]] * 100_001},
            "more than this server's limit of 100000",
        ),
    ],
)
def test_bad_input_gets_422_with_useful_message(http, endpoint, body, message):
    r = http.post(endpoint, json=body)
    assert r.status_code == 422, r.text
    payload = r.json()
    assert payload["error"] == "invalid_request"
    assert message in payload["detail"]


def test_malformed_json_and_unknown_route(http):
    r = http.post("/rerank", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = http.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_info_and_openapi(http):
    info = http.get("/info").json()
    assert info["family"] == "bi-encoder"
    assert info["limits"]["max_length"] == 256
    assert info["limits"]["max_pairs_per_request"] == 100_000
    schema = http.get("/openapi.json").json()
    assert {"/rerank", "/rerank_batch", "/rerank_batch_simple", "/health", "/info"} <= set(
        schema["paths"]
    )
    assert http.get("/docs").status_code == 200


def test_metrics_count_requests_cache_and_batches(http):
    docs = [unique(d) for d in DOCS]
    before = metric_samples(http)
    http.post("/rerank", json={"query": QUERY, "documents": docs})
    http.post("/rerank", json={"query": QUERY, "documents": docs})
    http.post("/rerank", json={"query": "", "documents": docs})
    after = metric_samples(http)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("reranker_requests_total", endpoint="/rerank", status="200") == 2
    assert delta("reranker_requests_total", endpoint="/rerank", status="422") == 1
    assert delta("reranker_request_duration_seconds_count", endpoint="/rerank") == 3
    assert delta("reranker_cache_hits_total") == len(docs)
    assert delta("reranker_cache_misses_total") == len(docs)
    assert delta("reranker_pairs_scored_total") == len(docs)
    assert delta("reranker_engine_batch_pairs_count") >= 1
    assert delta("reranker_engine_batch_duration_seconds_sum") > 0
    assert ("reranker_queue_depth_pairs", ()) in after
    assert after[("reranker_engine_batches_in_flight", ())] == 0  # idle between requests
    assert after[("reranker_engine_up", ())] == 1
    # Memory of the caches, read when /metrics is collected: new entries and new texts add to it.
    assert delta("reranker_cache_entries") == len(docs)
    assert delta("reranker_cache_bytes") > 0
    assert delta("reranker_embedding_cache_bytes") > 0


def test_livez_answers_whatever_the_engine_state(http):
    r = http.get("/livez")
    assert r.status_code == 200 and r.json()["status"] == "alive"
