"""A model's fingerprint: which weights, config and tokenizer produced a score.

It is part of every score-cache key (with the dtype the engine runs at), so that a model swapped
behind the same name (a retrained checkpoint written to the same directory, another revision of a
hub id, another dtype) never serves the old model's scores from the shared cache, where they live
for days.

Every file of the model directory (weights, config, tokenizer, pooling config) is hashed whole:
sampling would miss a fine-tune that moved few weights. BLAKE2b reads about 1 GB/s and releases the
GIL, and the service computes it while the engine loads, so it adds little to start-up.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

logger = logging.getLogger("reranker_server")


def _resolve(model: str) -> Path | None:
    """The directory holding the model: itself, or the hub cache's snapshot of that id."""
    path = Path(model)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached here: the caller falls back to the name
        return None


def _hash_file(path: Path, h: hashlib.blake2b) -> None:
    h.update(f"{path.stat().st_size}:".encode())
    with path.open("rb") as f:
        h.update(hashlib.file_digest(f, "blake2b").digest())


def model_fingerprint(model: str) -> str:
    """A short hex digest of the model's files (the caller adds the dtype it runs at)."""
    h = hashlib.blake2b(digest_size=12)
    directory = _resolve(model)
    if directory is None:
        logger.warning(
            "cannot read %s's files to fingerprint it; cached scores are keyed by its name only",
            model,
        )
        h.update(f"name={model}".encode())
        return h.hexdigest()
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    for path in files:
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        _hash_file(path, h)
    return h.hexdigest()
