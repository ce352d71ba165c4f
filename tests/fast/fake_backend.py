"""``FakeBackend``: a fake engine behind the real service, for the fast tier.

Everything above the engine is the real code: the app, routes, error mapping, auth, limits, the
batching queue, the score cache, the family's tokenisation (with MiniLM's real tokenizer) and its
read-out. Only the four engine-facing methods of ``Backend`` are replaced, all in this class:

- ``_start``: no engine; a 256-token limit, a token budget, and MiniLM's tokenizer;
- ``_embed``: a bag-of-tokens vector per text (texts sharing tokens score higher);
- ``_classify``: a deterministic logit per encoded pair;
- ``_engine_alive``: ``False`` after ``kill()``.

Its scores mean nothing beyond being stable; the real-engine suites prove the scores.
"""

from __future__ import annotations

import asyncio
import threading
import zlib

import numpy as np
from reranker_server.backend import Backend
from reranker_server.model_family import ClassifyInput
from reranker_server.settings import Settings
from reranker_server.testing.tiny_models import MINILM_DIR

MAX_LENGTH = 256  # all-MiniLM-L6-v2's, so that messages read as they do on the real model
BATCH_MAX_TOKENS = 8192
DIMENSIONS = 64

_tokenizer = None


def minilm_tokenizer():  # noqa: ANN201 - a transformers tokenizer
    """MiniLM's real tokenizer, loaded once per session (it is read-only once loaded)."""
    global _tokenizer
    if _tokenizer is None:
        from transformers import AutoTokenizer

        _tokenizer = AutoTokenizer.from_pretrained(str(MINILM_DIR))
    return _tokenizer


def bag_of_tokens(token_ids: list[int]) -> np.ndarray:
    """A vector with one bucket per token id (mod DIMENSIONS), special tokens included."""
    vector = np.zeros(DIMENSIONS, dtype=np.float32)
    for token in token_ids:
        vector[token % DIMENSIONS] += 1.0
    return vector


def fake_logit(prompt: list[int]) -> float:
    """A stable logit in [-4, 4] per token sequence."""
    return zlib.crc32(np.asarray(prompt, dtype=np.int64).tobytes()) / 2**32 * 8 - 4


class FakeBackend(Backend):
    """A fake engine (see the module docstring). ``hold_loading()`` keeps it loading until
    ``finish_loading()``; ``kill()`` makes it dead; ``batches`` records each engine call's size."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.batches: list[int] = []
        self._killed = False
        # A threading.Event: tests drive the app from another thread than its event loop.
        self._may_load = threading.Event()
        self._may_load.set()

    def hold_loading(self) -> None:
        self._may_load.clear()

    def finish_loading(self) -> None:
        self._may_load.set()

    def kill(self) -> None:
        self._killed = True

    # ---- the engine-facing methods of Backend -----------------------------------------------

    async def _start(self):  # noqa: ANN202 - returns a transformers tokenizer
        while not self._may_load.is_set():
            await asyncio.sleep(0.01)  # polled, so that shutdown can cancel a held load
        self.max_length = MAX_LENGTH
        self.batch_max_tokens = BATCH_MAX_TOKENS
        return minilm_tokenizer()

    async def _embed(self, token_ids: list[list[int]]) -> list[np.ndarray]:
        self.batches.append(len(token_ids))
        return [bag_of_tokens(ids) for ids in token_ids]

    async def _classify(self, encoded: ClassifyInput) -> list[float]:
        self.batches.append(len(encoded.prompts))
        return [fake_logit(prompt) for prompt in encoded.prompts]

    def _engine_alive(self) -> bool:
        if self._killed:
            self.mark_dead("the fake engine was killed")
        return not self._killed
