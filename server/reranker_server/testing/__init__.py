"""Helpers shared by the test suite and the benchmarks (``bench/``); the service never imports them.

- ``processes``: start the real service, a ``vllm serve`` engine or a redis-server on loopback,
  and stop their whole process trees.
- ``tiny_models``: small random-weight models of each family's shape, written at run time.
- ``ray_cluster``: a two-node Ray cluster on loopback and helpers to find, kill and count Serve
  replicas (needs the ``ray`` extra).

They need the ``test`` (or ``bench``) extra: psutil, redis, torch and transformers are imported
when a helper needs them.
"""
