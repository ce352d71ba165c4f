"""A reranker service on vLLM: FastAPI in front of a batching queue, a score cache and one engine.

Modules, one concept each:

- ``settings``          configuration (pydantic-settings, ``RERANKER_`` env prefix)
- ``schemas``           wire models of the native HTTP API
- ``compat``            Cohere/Jina/vLLM/TEI request and response shapes, mapped onto native ones
- ``auth``              API keys (``Authorization: Bearer``), compared in constant time
- ``request_limits``    body size, text length and Unicode checks at the edge
- ``scoring``           the shared types: ``Pair``, ``GroupKey``, ``Score``
- ``model_family``      the family names, detection and the ``Family`` base; one module per
  family (``cross_encoder``, ``llm_reranker``, ``bi_encoder``): prompt format and version, score
  range, default instruction, encoding, engine call order and read-out
- ``model_fingerprint`` a hash of the model's files and dtype, so cache keys change with the model
- ``request_resolution`` a request checked and settled into pairs and their ``GroupKey``
- ``backend``           the engine adapter base (the family's pipeline, start-up, engine state),
  with ``inprocess_backend`` (vLLM in this process) and ``remote_backend`` (``vllm serve`` engines,
  through ``engine_pool``)
- ``batch_queue``       the asyncio queue: groups pairs into engine batches, round-robin, in flight
- ``score_cache``       the tiered score cache: a local LRU, then ``shared_cache`` (optional Redis)
- ``embedding_cache``   bi-encoders: each text embedded once, bounded by bytes
- ``service``           one request's life: resolve, cache, queue, answer
- ``metrics``           Prometheus metrics
- ``errors``            error types and their single mapping to JSON answers
- ``routes``            the HTTP routes
- ``app``               the application factory
- ``cli``               the ``reranker-server`` console entry point
"""

__version__ = "0.1.0"
