"""Start-up fingerprint cost on a 1 GB model directory: full hashing against the quick mode.

Writes a model directory (the embedded MiniLM's config and tokenizer files plus a 1 GiB weights
file of random bytes), then times ``model_fingerprint`` in both modes, with the weights in the
page cache (warm) and evicted from it with posix_fadvise (cold: read from disk, as at a pod's
first start). Run: ``nice -n 10 python bench/fingerprint_cost.py [DIR]``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from reranker_server.model_fingerprint import model_fingerprint
from reranker_server.settings import default_model_path

GIB = 2**30


def _evict(directory: Path) -> None:
    for f in directory.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _time(directory: Path, mode: str, *, cold: bool, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        if cold:
            _evict(directory)
        t = time.perf_counter()
        model_fingerprint(str(directory), mode)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="fp-cost-"))
    model = root / "model"
    model.mkdir(parents=True, exist_ok=True)
    for f in Path(default_model_path()).iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, model / f.name)
    weights = model / "model.safetensors"
    if not weights.exists() or weights.stat().st_size != GIB:
        with weights.open("wb") as out:
            for _ in range(GIB // 2**24):
                out.write(os.urandom(2**24))
    size = sum(f.stat().st_size for f in model.iterdir())
    print(f"model dir: {size / 1e9:.3f} GB in {len(list(model.iterdir()))} files")
    for cold in (False, True):
        full = _time(model, "full", cold=cold)
        quick = _time(model, "quick", cold=cold)
        print(
            f"{'cold' if cold else 'warm'} page cache: full {full:.3f} s, "
            f"quick {quick * 1e3:.1f} ms,"
            f" full/quick {full / quick:.0f}x"
        )
    if len(sys.argv) <= 1:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
