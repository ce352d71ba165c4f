"""The quick fingerprint keeps the guarantee: a new model behind the same name changes it."""

from __future__ import annotations

import os

import pytest
from reranker_server import model_fingerprint as mf
from reranker_server.model_fingerprint import model_fingerprint
from tiny_models import write_tiny_cross_encoder


@pytest.fixture
def small_whole_limit(monkeypatch):
    """Treat the tiny model's weights as large, as a real checkpoint's are."""
    monkeypatch.setattr(mf, "WHOLE_FILE_BYTES", 4096)


def test_weights_rewritten_in_place_at_the_same_size_change_it(tmp_path, small_whole_limit):
    model = write_tiny_cross_encoder(tmp_path / "m", seed=0)
    weights = model / "model.safetensors"
    assert weights.stat().st_size > mf.WHOLE_FILE_BYTES
    before = model_fingerprint(str(model))
    assert before == model_fingerprint(str(model))  # stable while nothing changes
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    # A coarse clock could give the rewrite the old mtime; a writer always moves it forward.
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert model_fingerprint(str(model)) != before


def test_a_large_file_is_not_read_in_quick_mode_but_is_in_full_mode(tmp_path, small_whole_limit):
    model = write_tiny_cross_encoder(tmp_path / "m", seed=0)
    weights = model / "model.safetensors"
    st = weights.stat()
    quick, full = model_fingerprint(str(model)), model_fingerprint(str(model), "full")
    # Same size, same mtime, other bytes (a copy tool keeping mtimes): only full mode sees it.
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_fingerprint(str(model)) == quick
    assert model_fingerprint(str(model), "full") != full
    assert quick != full  # the mode is part of the key


def test_small_files_are_hashed_whole_in_quick_mode(tmp_path, small_whole_limit):
    model = write_tiny_cross_encoder(tmp_path / "m", seed=0)
    config = model / "config.json"
    st = config.stat()
    before = model_fingerprint(str(model))
    text = config.read_text()
    config.write_text(text.replace('"vocab_size": 30522', '"vocab_size": 30523'))  # same size
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert config.read_text() != text
    assert model_fingerprint(str(model)) != before


def test_hub_snapshots_are_keyed_by_their_blob_names(tmp_path, small_whole_limit):
    # The hub cache's layout: snapshots/<rev>/<file> -> ../../blobs/<sha256>.
    src = write_tiny_cross_encoder(tmp_path / "src", seed=0)
    blobs, snap = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "rev1"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(src.iterdir())):
        blob = blobs / f"sha{i}"
        os.replace(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    before = model_fingerprint(str(snap))
    weights = (snap / "model.safetensors").resolve()
    os.utime(weights, ns=(1, 1))  # a re-download's mtime does not matter: the blob name does
    assert model_fingerprint(str(snap)) == before
    os.replace(weights, blobs / "sha-new")
    (snap / "model.safetensors").unlink()
    (snap / "model.safetensors").symlink_to(os.path.relpath(blobs / "sha-new", snap))
    assert model_fingerprint(str(snap)) != before
