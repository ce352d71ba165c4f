"""The tiny test models, re-exported from ``reranker_server.testing.tiny_models`` (their home)."""

from reranker_server.testing.tiny_models import (
    MINILM_DIR,
    TOKENIZER_FILES,
    copy_tokenizer,
    write_qwen3_reranker,
    write_tiny_cross_encoder,
    write_tiny_qwen3_reranker,
)

__all__ = [
    "MINILM_DIR",
    "TOKENIZER_FILES",
    "copy_tokenizer",
    "write_qwen3_reranker",
    "write_tiny_cross_encoder",
    "write_tiny_qwen3_reranker",
]
