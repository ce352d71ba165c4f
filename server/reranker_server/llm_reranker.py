"""The LLM-reranker family: the Qwen3-Reranker prompt, scored as p(yes) by the engine.

The server writes the chat prompt and tokenises it; vLLM reads logit(yes) - logit(no) through
its sequence-classification conversion of the causal LM (``LLM_RERANKER_HF_OVERRIDES``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .model_family import ClassifierFamily, ClassifyInput, ModelFamily
from .scoring import GroupKey, Pair
from .settings import Settings

# The Qwen3-Reranker prompt, as published with the model.
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_DEFAULT_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)

# vLLM's prefix cache reuses whole KV blocks only. Its CPU default block (128 tokens) is longer
# than the whole shared prefix of a Qwen3-Reranker prompt (system prompt, instruction and a short
# query: about 75 tokens), so nothing was reused (measured: 0.0% hit rate); 32 reuses most of it
# (2.6x on one query x 50 documents with a longer query). GPUs default to 16 already.
LLM_RERANKER_CPU_BLOCK = 32

LLM_RERANKER_HF_OVERRIDES: dict[str, Any] = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}


def qwen3_body(instruction: str, query: str, document: str) -> str:
    """The user turn of the Qwen3-Reranker prompt. The document comes last so that cutting the
    tokenised body from the right shortens the document first and keeps the query."""
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class LlmReranker(ClassifierFamily):
    """A Qwen3-Reranker-style causal LM; the instruction defaults to the published one."""

    kind = ModelFamily.LLM_RERANKER
    prompt_version = "qwen3-1"
    score_range = "p(yes) in [0, 1]; raw_score is logit(yes) - logit(no)"
    default_instruction: ClassVar[str | None] = QWEN3_DEFAULT_INSTRUCTION
    hf_overrides: ClassVar[dict[str, Any]] = LLM_RERANKER_HF_OVERRIDES
    cpu_kv_block_size: ClassVar[int | None] = LLM_RERANKER_CPU_BLOCK

    def __init__(self, settings: Settings, tokenizer: Any) -> None:
        super().__init__(settings, tokenizer)
        self._prefix: list[int] = tokenizer(QWEN3_PREFIX, add_special_tokens=False)["input_ids"]
        self._suffix: list[int] = tokenizer(QWEN3_SUFFIX, add_special_tokens=False)["input_ids"]
        # Room for the template and at least a few tokens of the pair itself.
        self.min_length = len(self._prefix) + len(self._suffix) + 8

    def engine_order(self, pairs: Sequence[Pair]) -> list[int] | None:
        """The pairs of one query side by side, so that the engine's prefix cache computes the
        shared system prompt, instruction and query once for all of them (vLLM reuses cached
        blocks within one engine step, too)."""
        return sorted(range(len(pairs)), key=lambda i: pairs[i][0])

    def _encode(self, key: GroupKey, pairs: Sequence[Pair]) -> ClassifyInput:
        # Never empty: the group key already carries the default when a request gave none.
        instruction = self.instruction_of(key.instruction) or ""
        budget = key.max_length - len(self._prefix) - len(self._suffix)
        bodies = [qwen3_body(instruction, q, d) for q, d in pairs]
        # The document is last in the body, so cutting from the right shortens it first.
        enc = self.tokenizer(bodies, add_special_tokens=False, truncation=True, max_length=budget)
        prompts = [self._prefix + ids + self._suffix for ids in enc["input_ids"]]
        return ClassifyInput(prompts=prompts)
