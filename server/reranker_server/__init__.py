"""A reranker service on vLLM: FastAPI in front of a batching queue, a score cache and one engine.

Modules, one concept each:

- ``settings``      configuration (pydantic-settings, ``RERANKER_`` env prefix)
- ``schemas``       wire models of the HTTP API
- ``model_family``  which kind of reranker a model is, and how its inputs are formatted
- ``backend``       the engine adapter (in-process vLLM)
- ``batch_queue``   the asyncio queue that groups pairs into engine batches
- ``score_cache``   the MD5-keyed LRU of pair scores
- ``service``       one request's life: validate, cache, queue, answer
- ``metrics``       Prometheus metrics
- ``errors``        error types and their single mapping to JSON answers
- ``routes``        the HTTP routes
- ``app``           the application factory
- ``cli``           the ``reranker-server`` console entry point
"""

__version__ = "0.1.0"
