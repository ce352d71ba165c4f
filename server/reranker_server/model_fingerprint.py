"""A model's fingerprint: which weights, config and tokenizer produced a score.

It is part of every score-cache key (with the dtype the engine runs at), so that a model swapped
behind the same name (a retrained checkpoint written to the same directory, another revision of a
hub id, another dtype) never serves the old model's scores from the shared cache, where they live
for days.

Two modes (``RERANKER_FINGERPRINT``):

- ``quick`` (default): every file's path and size; the whole content of small files (config,
  tokenizer, weight index, pooling config: anything up to ``WHOLE_FILE_BYTES``); for large files
  (the weights) the content hash the hub cache already names the file by, if it is a hub blob,
  else its modification time in nanoseconds. Writing a new checkpoint into the directory, even
  in place and at the same size, changes the mtime; a hub revision changes the blob names.
  Start-up cost no longer grows with the model (measured in docs/fingerprint-cost.md).
  Replicas that copied the same local model at different times get different keys (a lower
  shared-cache hit rate, never a wrong score); ``full`` avoids that.
- ``full``: every file hashed whole (BLAKE2b, about 1 GB/s, while the engine loads).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Literal

logger = logging.getLogger("reranker_server")

FingerprintMode = Literal["quick", "full"]

# Files up to this size are hashed whole in quick mode: every config, index and tokenizer file
# (a Qwen3 tokenizer.json is 11 MB) but no real weight file.
WHOLE_FILE_BYTES = 32 * 2**20


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


def _content_digest(path: Path) -> bytes:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "blake2b").digest()


def _hub_blob_name(path: Path) -> str | None:
    """The blob a hub-cache snapshot links to: its name is the file's sha256 (git sha1 if small)."""
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    return target.name if target.parent.name == "blobs" else None


def _file_identity(path: Path, mode: FingerprintMode) -> bytes:
    stat = path.stat()
    head = f"{stat.st_size}:".encode()
    if mode == "full" or stat.st_size <= WHOLE_FILE_BYTES:
        return head + _content_digest(path)
    blob = _hub_blob_name(path)
    if blob is not None:
        return head + f"blob={blob}".encode()
    return head + f"mtime={stat.st_mtime_ns}".encode()


def model_fingerprint(model: str, mode: FingerprintMode = "quick") -> str:
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
    # The mode is part of the digest: the two modes never produce the same key for different files.
    h.update(f"mode={mode}\0".encode())
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    for path in files:
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        h.update(_file_identity(path, mode))
    return h.hexdigest()
