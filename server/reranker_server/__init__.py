"""A reranker service on vLLM: FastAPI in front of a batching queue, a score cache and one engine.

Modules, one concept each:

- ``settings``          configuration (pydantic-settings, ``RERANKER_`` env prefix);
  ``settings_doc`` generates ``docs/configuration.md`` from it
- ``schemas``           wire models of the native HTTP API
- ``compat``            Cohere/Jina/vLLM/TEI request and response shapes, mapped onto native ones
- ``provider_shapes``   more providers' rerank routes: NVIDIA NIM, Voyage, Infinity, DeepInfra
- ``auth``              API keys (``Authorization: Bearer``), compared in constant time
- ``request_limits``    body size, text length and Unicode checks at the edge
- ``scoring``           the shared types: ``Pair``, ``GroupKey``, ``Score``
- ``model_family``      the family names, detection and the ``Family`` base; one module per
  family (``cross_encoder``, ``llm_reranker``, ``bi_encoder``): prompt format and version, score
  range, default instruction, encoding, engine call order and read-out
- ``model_fingerprint`` a hash of the model's files and dtype, so cache keys change with the model
- ``model_check``       a local model's files checked readable before the engine loads them
- ``request_resolution`` a request checked and settled into pairs and their ``GroupKey``
- ``backend``           the engine adapter base (the family's pipeline, start-up, engine state),
  with ``inprocess_backend`` (vLLM in this process) and ``remote_backend`` (``vllm serve`` engines,
  through ``engine_pool``); on Ray Serve, ``ray_backend`` (engine replicas through a
  ``DeploymentHandle``), ``ray_engine`` (one vLLM engine per replica) and ``ray_serve`` (the app)
- ``crash_only``        exit when the engine cannot start or dies, so that restart policies act
- ``batch_queue``       the asyncio queue: groups pairs into engine batches, round-robin, in flight
- ``score_cache``       the tiered score cache: a local LRU, then ``shared_cache`` (optional Redis)
- ``embedding_cache``   bi-encoders: each text embedded once, bounded by bytes
- ``service``           one request's life: resolve, cache, queue, answer
- ``metrics``           Prometheus metrics, each written where its event happens
- ``errors``            error types and their single mapping to JSON answers
- ``routes``            the HTTP routes
- ``app``               the application factory
- ``cli``               the ``reranker-server`` console entry point
- ``testing``           process helpers and tiny models shared by ``tests/`` and ``bench/`` (the
  service never imports it)
"""

__version__ = "0.1.0"
