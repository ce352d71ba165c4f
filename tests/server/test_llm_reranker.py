"""The LLM-reranker family (Qwen3-Reranker format) through the real engine, on a tiny random Qwen3
model.

Reference: transformers' Qwen3ForCausalLM on the same weights, given the prompt written out here
from the Qwen3-Reranker model card (not from the server's constants), read as logit(yes) -
logit(no) at the last position. Agreement checks the prompt format, the instruction handling,
truncation and vLLM's no/yes classifier conversion together.
"""

from __future__ import annotations

import math

import httpx
import pytest

pytestmark = pytest.mark.engine

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QUERY = "what is the capital of france"
DOCS = ["paris is the capital of france", "bananas are yellow", "berlin is in germany"]


@pytest.fixture(scope="module")
def hf_raw(qwen3_dir):
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(qwen3_dir)
    model = Qwen3ForCausalLM.from_pretrained(qwen3_dir, torch_dtype=torch.float32).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    prefix = tok(PREFIX, add_special_tokens=False)["input_ids"]
    suffix = tok(SUFFIX, add_special_tokens=False)["input_ids"]

    def raw(query: str, doc: str, instruction: str = DEFAULT_INSTRUCTION, max_length=1024) -> float:
        body = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
        ids = tok(body, add_special_tokens=False)["input_ids"]
        ids = prefix + ids[: max_length - len(prefix) - len(suffix)] + suffix
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        return float(logits[yes] - logits[no])

    return raw


@pytest.fixture
def qw(qwen3_server):
    with httpx.Client(base_url=qwen3_server.url, timeout=120) as c:
        yield c


def test_info_reports_llm_reranker(qw):
    info = qw.get("/info").json()
    assert info["family"] == "llm-reranker"
    assert info["default_instruction"] == DEFAULT_INSTRUCTION


def test_scores_are_p_yes_of_the_formatted_prompt(qw, hf_raw):
    r = qw.post("/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    for x in r.json()["results"]:
        want = hf_raw(QUERY, DOCS[x["index"]])
        assert x["raw_score"] == pytest.approx(want, abs=1e-3)
        assert x["relevance_score"] == pytest.approx(1 / (1 + math.exp(-want)), abs=1e-4)


def test_instruction_goes_into_the_prompt(qw, hf_raw):
    ins = "Decide whether the passage names a city"
    r = qw.post("/rerank", json={"query": QUERY, "documents": DOCS, "instruction": ins})
    for x in r.json()["results"]:
        assert x["raw_score"] == pytest.approx(hf_raw(QUERY, DOCS[x["index"]], ins), abs=1e-3)


def test_default_instruction_used_when_none_given(qw):
    a = qw.post("/rerank", json={"query": QUERY, "documents": DOCS}).json()
    b = qw.post(
        "/rerank", json={"query": QUERY, "documents": DOCS, "instruction": DEFAULT_INSTRUCTION}
    ).json()
    assert [x["relevance_score"] for x in a["results"]] == [
        x["relevance_score"] for x in b["results"]
    ]
    assert b["usage"]["cache_hits"] == len(DOCS)  # same effective instruction, same cache entries


def test_truncation_cuts_the_document(qw, hf_raw):
    long_doc = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)
    r = qw.post("/rerank", json={"query": QUERY, "documents": [long_doc], "max_length": 120})
    assert r.status_code == 200, r.text
    want = hf_raw(QUERY, long_doc, max_length=120)
    assert r.json()["results"][0]["raw_score"] == pytest.approx(want, abs=1e-3)


def test_batch_with_three_instructions_equals_each_alone(qw):
    instructions = ["Find passages about cities", "Find passages about fruit", None]
    requests = [
        {"query": QUERY, "documents": DOCS, "instruction": i, "max_length": 500}
        for i in instructions
    ]
    batch = qw.post("/rerank_batch", json={"requests": requests}).json()["results"]
    for req, got in zip(requests, batch):
        alone = qw.post("/rerank", json={**req, "max_length": 499}).json()  # fresh engine work
        assert alone["usage"]["cache_hits"] == 0
        want = {x["index"]: x["relevance_score"] for x in alone["results"]}
        for x in got["results"]:
            assert x["relevance_score"] == pytest.approx(want[x["index"]], abs=1e-5)
    first = {x["index"]: x["raw_score"] for x in batch[0]["results"]}
    second = {x["index"]: x["raw_score"] for x in batch[1]["results"]}
    assert first[0] != pytest.approx(second[0], abs=1e-5)


def test_max_length_below_the_template_is_422(qw):
    r = qw.post("/rerank", json={"query": QUERY, "documents": DOCS, "max_length": 10})
    assert r.status_code == 422 and "too small" in r.json()["detail"]


def test_pairs_of_interleaved_queries_come_back_in_the_callers_order(qw, hf_raw):
    """The engine gets each batch ordered by query (for the prefix cache); the caller's order
    must survive that."""
    queries = ["which city is the capital", "what colour are bananas", "where is berlin"]
    pairs = [[(i * 2) % 3, i % 3] for i in range(9)]  # queries interleaved, not sorted
    r = qw.post(
        "/rerank_batch_simple", json={"queries": queries, "documents": DOCS, "pairs": pairs}
    )
    assert r.status_code == 200, r.text
    for (qi, di), got in zip(pairs, r.json()["scores"]):
        want = hf_raw(queries[qi], DOCS[di])
        assert got == pytest.approx(1 / (1 + math.exp(-want)), abs=1e-4)
