"""The in-process engine's arguments per model family (pure logic; the engine suites start them)."""

from __future__ import annotations

from reranker_server.inprocess_backend import engine_kwargs
from reranker_server.model_family import ModelFamily
from reranker_server.settings import Settings


def test_llm_rerankers_on_cpu_get_kv_blocks_short_enough_for_prefix_reuse():
    s = Settings(model="m")
    assert engine_kwargs(s, ModelFamily.LLM_RERANKER, on_cpu=True)["block_size"] == 32
    assert "block_size" not in engine_kwargs(s, ModelFamily.LLM_RERANKER, on_cpu=False)
    # Encoder-only models have no prefix cache in vLLM: nothing to tune.
    assert "block_size" not in engine_kwargs(s, ModelFamily.CROSS_ENCODER, on_cpu=True)


def test_the_setting_overrides_the_default():
    s = Settings(model="m", kv_block_size=64)
    assert engine_kwargs(s, ModelFamily.LLM_RERANKER, on_cpu=True)["block_size"] == 64
    assert engine_kwargs(s, ModelFamily.BI_ENCODER, on_cpu=False)["block_size"] == 64


def test_auto_dtype_is_float32_on_cpu_and_left_to_vllm_elsewhere():
    auto = Settings(model="m")
    assert engine_kwargs(auto, ModelFamily.BI_ENCODER, on_cpu=True)["dtype"] == "float32"
    assert engine_kwargs(auto, ModelFamily.BI_ENCODER, on_cpu=False)["dtype"] == "auto"
    bf16 = Settings(model="m", dtype="bfloat16")
    assert engine_kwargs(bf16, ModelFamily.CROSS_ENCODER, on_cpu=True)["dtype"] == "bfloat16"
