"""A reranker service on vLLM: FastAPI in front of a batching queue, a score cache and one engine.

Modules, one concept each:

- ``settings``          configuration (pydantic-settings, ``RERANKER_`` env prefix)
- ``schemas``           wire models of the native HTTP API
- ``compat``            Cohere/Jina/vLLM/TEI request and response shapes, mapped onto native ones
- ``auth``              API keys (``Authorization: Bearer``), compared in constant time
- ``request_limits``    body size, text length and Unicode checks at the edge
- ``scoring``           the shared types: ``Pair``, ``GroupKey``, ``Score``
- ``model_family``      which kind of reranker a model is, and how its inputs are formatted
- ``model_fingerprint`` a hash of the model's files and dtype, so cache keys change with the model
- ``pair_encoding``     pairs to token ids (each pair on its own terms) and engine outputs to scores
- ``backend``           the engine adapter base (encode, embedding cache, batch order, read-out),
  with ``inprocess_backend`` (vLLM in this process) and ``remote_backend`` (``vllm serve`` engines,
  through ``engine_pool``)
- ``batch_queue``       the asyncio queue: groups pairs into engine batches, round-robin, in flight
- ``score_cache``       the MD5-keyed LRU of pair scores; ``shared_cache`` the optional Redis level
- ``embedding_cache``   bi-encoders: each text embedded once, bounded by bytes
- ``service``           one request's life: validate, cache, queue, answer
- ``metrics``           Prometheus metrics
- ``errors``            error types and their single mapping to JSON answers
- ``routes``            the HTTP routes
- ``app``               the application factory
- ``cli``               the ``reranker-server`` console entry point
"""

__version__ = "0.1.0"
