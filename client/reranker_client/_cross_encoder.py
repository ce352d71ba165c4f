"""A sentence-transformers ``CrossEncoder`` look-alike whose scores come from the service.

``sentence_transformers.util.mine_hard_negatives(..., cross_encoder=...)`` (and other code that
only calls ``CrossEncoder.predict``) can take a :class:`RerankerCrossEncoder` instead, so the
rescoring runs on the service's model rather than in the training process.

``numpy``, ``torch`` and ``tqdm`` are imported when :meth:`RerankerCrossEncoder.predict` needs
them, so ``import reranker_client`` still depends on ``httpx`` only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import httpx

from ._client import RerankerClient
from ._config import DEFAULT_BASE_URL

__all__ = ["RerankerCrossEncoder"]

#: Pairs per ``score_pairs`` call; each call is also one step of the progress bar.
DEFAULT_CHUNK_PAIRS = 1024
#: Distinct (query, document) scores remembered between calls.
DEFAULT_CACHE_SIZE = 200_000


class RerankerCrossEncoder:
    """Score text pairs on the reranker service with ``CrossEncoder.predict``'s signature.

    Each :meth:`predict` call looks the pairs up in a bounded in-memory cache (keyed by the
    ``(query, document)`` tuple, so no two pairs share a key), sends every distinct missing pair
    once, cut into chunks of ``chunk_pairs`` sent ``max_concurrency`` at a time through a
    :class:`RerankerClient` (which splits further to the server's limit and retries transient
    failures), and reassembles the scores in input order.

    The scores are the service's own (``relevance_score``): no activation is applied unless
    ``activation_fn`` is passed. Only one score per pair exists, so ``apply_softmax`` has
    nothing to act on, as with a one-label ``CrossEncoder``.

    Args:
        base_url: Where the service listens.
        api_key: The service's API key (default: ``RERANKER_API_KEY`` from the environment).
        instruction: Sent with every pair (for instruction-following rerankers).
        max_length: Truncation length the server applies to each pair.
        chunk_pairs: Most distinct pairs per client call (one progress-bar step).
        max_concurrency: Most client calls in flight at once.
        cache_size: Most scores kept between calls (0 disables the cache).
        client: Use this client instead of building one (``base_url``, ``api_key`` and
            ``client_kwargs`` are then ignored); it is not closed by :meth:`close`.
        **client_kwargs: Passed to :class:`RerankerClient` (``timeout``, ``max_retries``, ...).

    Example::

        from sentence_transformers import SentenceTransformer, util
        from reranker_client import RerankerCrossEncoder

        with RerankerCrossEncoder("http://localhost:8000") as cross_encoder:
            mined = util.mine_hard_negatives(
                dataset, SentenceTransformer("all-MiniLM-L6-v2"),
                cross_encoder=cross_encoder, relative_margin=0.05,
            )
    """

    def __init__(
        self,
        base_url: str | httpx.URL = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        instruction: str | None = None,
        max_length: int | None = None,
        chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
        max_concurrency: int = 4,
        cache_size: int = DEFAULT_CACHE_SIZE,
        client: RerankerClient | None = None,
        **client_kwargs: Any,
    ) -> None:
        if chunk_pairs < 1:
            raise ValueError(f"chunk_pairs must be >= 1, got {chunk_pairs}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._owns_client = client is None
        self.client = client or RerankerClient(
            base_url, api_key=api_key, max_concurrency=max_concurrency, **client_kwargs
        )
        self.instruction = instruction
        self.max_length = max_length
        self.chunk_pairs = chunk_pairs
        self.max_concurrency = max_concurrency
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._cache_lock = threading.Lock()
        #: Pairs answered from this object's cache, summed over calls.
        self.cache_hits = 0

    # ----------------------------------------------------------------------------------------
    # CrossEncoder's API

    def predict(
        self,
        inputs: Sequence[Sequence[str]] | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        activation_fn: Callable[[Any], Any] | None = None,
        apply_softmax: bool | None = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Any = None,
        pool: Any = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Score ``(query, document)`` pairs; the return types follow ``CrossEncoder.predict``.

        ``batch_size``, ``device``, ``pool`` and ``chunk_size`` are accepted for compatibility
        and do not change the result: the service batches on its side. ``prompt`` and
        ``prompt_name`` are refused, as the service has no prompt to prepend (use
        ``instruction=`` on the constructor).

        Returns:
            A ``torch.Tensor`` if ``convert_to_tensor``, else a float32 ``numpy.ndarray`` if
            ``convert_to_numpy``, else a list of 0-d tensors; one score for a single pair.
        """
        if prompt is not None or prompt_name is not None:
            raise ValueError(
                "RerankerCrossEncoder has no prompts; pass instruction= to its constructor"
            )
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        singular = _is_pair(inputs)
        pairs = [_as_pair(inputs)] if singular else [_as_pair(p) for p in inputs]
        scores = self._scores(pairs, bool(show_progress_bar))

        import numpy as np

        values = np.asarray(scores, dtype=np.float32)
        if activation_fn is not None or convert_to_tensor or not convert_to_numpy:
            import torch

            tensor = torch.from_numpy(values)
            if activation_fn is not None:
                tensor = activation_fn(tensor)
            if singular:
                tensor = tensor[0]
            if convert_to_tensor:
                return tensor
            if convert_to_numpy:
                return tensor.detach().cpu().float().numpy()
            return list(tensor) if not singular else tensor
        return values[0] if singular else values

    def start_multi_process_pool(self, target_devices: Any = None) -> dict[str, Any]:
        """Accepted for ``mine_hard_negatives(use_multi_process=...)``: the service is the pool."""
        return {}

    def stop_multi_process_pool(self, pool: Any) -> None:
        """Counterpart of :meth:`start_multi_process_pool`; nothing to stop."""

    def close(self) -> None:
        """Close the client this object built."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> RerankerCrossEncoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------
    # Scoring

    def _scores(self, pairs: list[tuple[str, str]], show_progress_bar: bool) -> list[float]:
        known: dict[tuple[str, str], float] = {}
        missing: list[tuple[str, str]] = []
        with self._cache_lock:
            for pair in dict.fromkeys(pairs):  # distinct pairs, first-seen order
                score = self._cache.get(pair)
                if score is None:
                    missing.append(pair)
                else:
                    self._cache.move_to_end(pair)
                    known[pair] = score
            self.cache_hits += len(known)
        chunks = [
            missing[i : i + self.chunk_pairs] for i in range(0, len(missing), self.chunk_pairs)
        ]
        bar = _progress_bar(len(missing)) if show_progress_bar and missing else None
        try:
            if len(chunks) <= 1 or self.max_concurrency == 1:
                for chunk in chunks:
                    known.update(zip(chunk, self._score_chunk(chunk)))
                    if bar is not None:
                        bar.update(len(chunk))
            else:
                with ThreadPoolExecutor(self.max_concurrency) as workers:
                    futures = {workers.submit(self._score_chunk, c): c for c in chunks}
                    for future in as_completed(futures):
                        chunk = futures[future]
                        known.update(zip(chunk, future.result()))
                        if bar is not None:
                            bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        self._remember({pair: known[pair] for pair in missing})
        return [known[pair] for pair in pairs]

    def _score_chunk(self, chunk: list[tuple[str, str]]) -> list[float]:
        # Each text is sent once per request and referred to by index.
        queries = list(dict.fromkeys(q for q, _ in chunk))
        documents = list(dict.fromkeys(d for _, d in chunk))
        q_index = {q: i for i, q in enumerate(queries)}
        d_index = {d: i for i, d in enumerate(documents)}
        return self.client.score_pairs(
            queries,
            documents,
            [(q_index[q], d_index[d]) for q, d in chunk],
            instruction=self.instruction,
            max_length=self.max_length,
        )

    def _remember(self, scores: dict[tuple[str, str], float]) -> None:
        if not self.cache_size:
            return
        with self._cache_lock:
            self._cache.update(scores)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)


def _is_pair(inputs: Any) -> bool:
    return len(inputs) == 2 and all(isinstance(x, str) for x in inputs)


def _as_pair(pair: Any) -> tuple[str, str]:
    if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
        raise ValueError(f"each input must be a (query, document) pair of strings, got {pair!r}")
    return (pair[0], pair[1])


def _progress_bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]
    except ImportError:  # tqdm is optional: no bar without it
        return None
    return tqdm(total=total, desc="Scoring pairs on the reranker", unit="pair")
