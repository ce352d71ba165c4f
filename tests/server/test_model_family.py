"""Unit tests of family detection, settings and error wording (no engine)."""

from __future__ import annotations

import pytest
from reranker_server.errors import describe_validation_errors
from reranker_server.model_family import ModelFamily, detect_family
from reranker_server.settings import DEFAULT_MODEL_NAME, Settings


@pytest.mark.parametrize(
    ("config", "family"),
    [
        (
            {"architectures": ["BertForSequenceClassification"], "num_labels": 1},
            ModelFamily.CROSS_ENCODER,
        ),
        (
            {
                "architectures": ["XLMRobertaForSequenceClassification"],
                "id2label": {"0": "LABEL_0"},
            },
            ModelFamily.CROSS_ENCODER,
        ),
        ({"architectures": ["Qwen3ForCausalLM"]}, ModelFamily.LLM_RERANKER),
        ({"architectures": ["BertModel"]}, ModelFamily.BI_ENCODER),
        ({}, ModelFamily.BI_ENCODER),
    ],
)
def test_detect_family(config, family):
    assert detect_family("some/model", config) is family


def test_multi_label_classifier_is_refused_with_advice():
    with pytest.raises(ValueError, match="RERANKER_MODEL_FAMILY"):
        detect_family("m", {"architectures": ["BertForSequenceClassification"], "num_labels": 3})


def test_detects_the_embedded_default_model(minilm_dir):
    assert detect_family(str(minilm_dir)) is ModelFamily.BI_ENCODER


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("RERANKER_CACHE_SIZE", "0")
    monkeypatch.setenv("RERANKER_BATCH_MAX_PAIRS", "64")
    monkeypatch.setenv("RERANKER_MODEL_FAMILY", "cross-encoder")
    s = Settings()
    assert (s.cache_size, s.batch_max_pairs, s.model_family) == (0, 64, "cross-encoder")
    assert s.model_name == DEFAULT_MODEL_NAME
    assert Settings(model="/x/y").model_name == "/x/y"
    assert Settings(model="/x/y", served_model_name="y").model_name == "y"


def test_validation_errors_read_as_a_sentence():
    errors = [
        {"loc": ("body", "documents", 2), "msg": "Input should be a valid string"},
        {"loc": ("body", "query"), "msg": "Value error, the query is empty; it must contain text"},
    ]
    assert describe_validation_errors(errors) == (
        "documents[2]: Input should be a valid string; "
        "query: the query is empty; it must contain text"
    )
