"""The model fingerprint in cache keys, on model files written at test time."""

from __future__ import annotations

from reranker_server.model_fingerprint import model_fingerprint
from tiny_models import write_tiny_cross_encoder


def test_same_files_same_fingerprint_and_any_change_shows(tmp_path):
    a = write_tiny_cross_encoder(tmp_path / "a", seed=0)
    same = write_tiny_cross_encoder(tmp_path / "same", seed=0)
    retrained = write_tiny_cross_encoder(tmp_path / "b", seed=1)
    assert model_fingerprint(str(a)) == model_fingerprint(str(same))
    assert model_fingerprint(str(a)) != model_fingerprint(str(retrained))

    # One weight changed in place, same size: still a different model.
    weights = a / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    before = model_fingerprint(str(a))
    weights.write_bytes(bytes(data))
    assert model_fingerprint(str(a)) != before


def test_a_model_that_cannot_be_read_falls_back_to_its_name(tmp_path):
    one = model_fingerprint("no-such-org/no-such-model")
    assert one == model_fingerprint("no-such-org/no-such-model")
    assert one != model_fingerprint("no-such-org/other-model")
