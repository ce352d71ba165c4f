"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS by test_schemathesis.py).

Two rules of the API cannot be written in OpenAPI: a ``/rerank_batch_simple`` pair's indexes must
be below the lengths of ``queries`` and ``documents``, and DeepInfra's ``/inference/{model}``
pairs ``queries[i]`` with ``documents[i]``, so the two lists are as long. Schema-valid bodies are
brought inside those rules (indexes taken modulo the lengths; both lists cut to the shorter), so
the fuzzer's valid cases are valid, and the server must accept every one of them; invalid
(negative) cases are left as generated.

The model in ``/inference/{model}`` is a path, not a body field the schema can enumerate: a
generated name is a 404 (right, but it never reaches the scoring), so valid cases name the served
model, which the test passes in ``SCHEMATHESIS_SERVED_MODEL``."""

from __future__ import annotations

import os

import schemathesis
from schemathesis import GenerationMode


@schemathesis.hook
def map_case(context, case):  # noqa: ARG001 - the hook's signature
    meta = case.meta
    positive = meta is None or meta.generation.mode is GenerationMode.POSITIVE
    body = case.body
    if case.operation.path == "/rerank_batch_simple" and positive and isinstance(body, dict):
        queries, documents, pairs = body.get("queries"), body.get("documents"), body.get("pairs")
        if queries and documents and isinstance(pairs, list):
            body["pairs"] = [[q % len(queries), d % len(documents)] for q, d in pairs]
    if case.operation.path.startswith("/inference/") and positive and isinstance(body, dict):
        queries, documents = body.get("queries"), body.get("documents")
        if isinstance(queries, list) and isinstance(documents, list) and queries and documents:
            n = min(len(queries), len(documents))
            body["queries"], body["documents"] = queries[:n], documents[:n]
        served = os.environ.get("SCHEMATHESIS_SERVED_MODEL")
        if served and case.path_parameters is not None:
            case.path_parameters["model"] = served
    return case
