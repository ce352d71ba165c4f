"""Models of real size for the pipeline benchmarks, written to disk once and reused.

No pretrained cross-encoder or LLM reranker can be installed here (no model hub), so:

- ``cross_encoder``: the shipped all-MiniLM-L6-v2 encoder weights under a seeded one-label
  classification head: the shape (and cost) of cross-encoder/ms-marco-MiniLM-L-6-v2.
- ``qwen3_reranker``: a Qwen3 causal LM with Qwen3-Reranker-0.6B's layer widths (hidden 1024,
  16 heads, 8 kv heads, head_dim 128, intermediate 3072) but few layers and random weights,
  loaded with vLLM's Qwen3-Reranker overrides. It borrows MiniLM's tokenizer, as the tests do.
- ``bi_encoder``: all-MiniLM-L6-v2 itself.

Scores carry no meaning; the cost per token is what these models are for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reranker_server.llm_reranker import LLM_RERANKER_HF_OVERRIDES as QWEN3_HF_OVERRIDES
from reranker_server.testing.tiny_models import MINILM_DIR, copy_tokenizer, write_qwen3_reranker

CACHE = Path("/tmp/reranker-bench-models")
QWEN3_LAYERS = 2
MODELS = ("cross_encoder", "qwen3_reranker", "bi_encoder")
CHAT_TEMPLATE = "qwen3_reranker.jinja"
# vLLM's examples/pooling/score/template/qwen3_reranker.jinja in effect (the package does not ship
# it): the published Qwen3-Reranker prompt, the same text the service writes.
QWEN3_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: {{ instruction | default('Given a web search query, retrieve "
    "relevant passages that answer the query') }}\n"
    "<Query>: {{ (messages | selectattr('role', 'eq', 'query') | first).content }}\n"
    "<Document>: {{ (messages | selectattr('role', 'eq', 'document') | first).content }}"
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
)


def _done(target: Path) -> bool:
    return (target / "model.safetensors").is_file() and (target / "vocab.txt").is_file()


def cross_encoder(seed: int = 0) -> Path:
    """MiniLM-L6 encoder weights with a seeded one-label head (ms-marco-MiniLM-L-6-v2's shape)."""
    target = CACHE / f"minilm-cross-encoder-s{seed}"
    if _done(target):
        return target
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig.from_pretrained(MINILM_DIR)
    config.num_labels = 1
    config.architectures = ["BertForSequenceClassification"]
    model = BertForSequenceClassification.from_pretrained(MINILM_DIR, config=config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    copy_tokenizer(target)
    return target


def qwen3_reranker(seed: int = 0, layers: int = QWEN3_LAYERS) -> Path:
    """Qwen3-Reranker-0.6B's layer widths, ``layers`` layers, random weights."""
    target = CACHE / f"qwen3-reranker-w1024-l{layers}-s{seed}"
    if _done(target) and (target / CHAT_TEMPLATE).is_file():
        return target
    write_qwen3_reranker(
        target,
        seed,
        hidden_size=1024,
        intermediate_size=3072,
        layers=layers,
        heads=16,
        kv_heads=8,
        head_dim=128,
        max_positions=4096,
    )
    # A Qwen tokenizer emits no token types; MiniLM's does, and vLLM's score path then hands them
    # to the Qwen3 model, which kills the engine core. Ask the borrowed tokenizer for ids only.
    tok_config = json.loads((target / "tokenizer_config.json").read_text())
    tok_config["model_input_names"] = ["input_ids", "attention_mask"]
    (target / "tokenizer_config.json").write_text(json.dumps(tok_config))
    (target / CHAT_TEMPLATE).write_text(QWEN3_TEMPLATE)
    return target


def bi_encoder() -> Path:
    return MINILM_DIR


def path(name: str, seed: int = 0) -> Path:
    """The model directory for one of ``MODELS``, written first if needed."""
    if name == "cross_encoder":
        return cross_encoder(seed)
    if name == "qwen3_reranker":
        return qwen3_reranker(seed)
    if name == "bi_encoder":
        return bi_encoder()
    raise ValueError(f"unknown model {name!r}; one of {MODELS}")


def engine_kwargs(name: str) -> dict[str, Any]:
    """Extra ``LLM``/``AsyncEngineArgs`` keywords the model needs (the reranker overrides)."""
    return {"hf_overrides": dict(QWEN3_HF_OVERRIDES)} if name == "qwen3_reranker" else {}


def serve_args(name: str) -> list[str]:
    """The same for ``vllm serve``'s command line."""
    if name == "qwen3_reranker":
        template = str(qwen3_reranker() / CHAT_TEMPLATE)
        return ["--hf-overrides", json.dumps(QWEN3_HF_OVERRIDES), "--chat-template", template]
    return []
