"""Model check on real files: a tiny model written by the test, broken the ways a copy breaks."""

from __future__ import annotations

import shutil

import pytest
from reranker_server.model_check import ModelFilesError, check_model_files


@pytest.fixture
def model_copy(tmp_path, cross_encoder_dir):
    copy = tmp_path / "model"
    shutil.copytree(cross_encoder_dir, copy)
    return copy


def test_a_whole_model_directory_and_a_hub_id_pass(model_copy):
    check_model_files(str(model_copy))
    check_model_files("BAAI/bge-reranker-v2-m3")  # not a directory: the engine resolves it


def test_truncated_weights_are_named(model_copy):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelFilesError, match="model.safetensors cannot be loaded"):
        check_model_files(str(model_copy))


def test_a_broken_or_missing_config_is_named(model_copy):
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(ModelFilesError, match="config.json cannot be parsed"):
        check_model_files(str(model_copy))
    (model_copy / "config.json").unlink()
    with pytest.raises(ModelFilesError, match="has no config.json"):
        check_model_files(str(model_copy))
