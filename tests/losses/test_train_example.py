"""examples/train_with_reranker.py runs end to end against the real service."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("datasets", reason="the example needs the train extra (datasets)")
pytest.importorskip("accelerate", reason="the example needs the train extra (accelerate)")

from sentence_transformers import SentenceTransformer  # noqa: E402

pytestmark = pytest.mark.engine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_with_reranker.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("train_with_reranker_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_trains_two_steps_and_saves_a_changed_model(
    minilm_server, minilm_dir, tmp_path, capsys
) -> None:
    example = _load_example()
    output = tmp_path / "model"
    result = example.main([minilm_server.url, str(output), "--steps", "2", "--batch-size", "16"])

    printed = capsys.readouterr().out
    assert "step 1: loss" in printed and "step 2: loss" in printed
    steps = [entry for entry in result["log_history"] if "loss" in entry]
    assert len(steps) == 2
    assert all(entry["reranker_sent_pairs"] > 0 for entry in steps)
    assert all(entry["reranker_naive_pairs"] == 3 * 16 * 16 for entry in steps)
    assert all(entry["reranker_masked"] > 0 for entry in steps)  # the set has real duplicates
    assert result["last_step"].sent_pairs < result["last_step"].naive_pairs

    trained = SentenceTransformer(str(output), device="cpu")
    original = SentenceTransformer(str(minilm_dir), device="cpu")
    before, after = dict(original.named_parameters()), dict(trained.named_parameters())
    assert before.keys() == after.keys()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) > len(before) // 2
    embedding = trained.encode(["How do I reset my password?"])
    assert embedding.shape == (1, 384)
