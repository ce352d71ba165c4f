"""The sync and async clients are twins: the same public methods with the same signatures."""

from __future__ import annotations

import inspect

from reranker_client import AsyncRerankerClient, RerankerClient

#: Where the twins differ by design: the I/O protocol's own names.
RENAMED = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__"}
#: The one parameter whose type differs by design: httpx's sync or async transport.
TRANSPORTS = {"httpx.BaseTransport | None", "httpx.AsyncBaseTransport | None"}


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def _comparable(signature: inspect.Signature) -> list[tuple[str, object, object, object]]:
    params = []
    for p in signature.parameters.values():
        annotation = "transport" if p.annotation in TRANSPORTS else p.annotation
        params.append((p.name, p.kind, p.default, annotation))
    return params


def test_the_clients_have_the_same_public_names_but_for_the_io_protocol():
    sync_names = {RENAMED.get(name, name) for name in _public(RerankerClient)}
    assert sync_names == _public(AsyncRerankerClient)
    for sync_name, async_name in RENAMED.items():
        assert hasattr(RerankerClient, sync_name) and hasattr(AsyncRerankerClient, async_name)


def test_every_method_has_the_same_signature_and_the_async_one_is_a_coroutine():
    for name in sorted(_public(RerankerClient) | {"__init__"}):
        sync_attr = getattr(RerankerClient, name)
        if not callable(sync_attr):
            continue  # properties: compared by name above
        async_attr = getattr(AsyncRerankerClient, RENAMED.get(name, name))
        sync_sig, async_sig = inspect.signature(sync_attr), inspect.signature(async_attr)
        assert _comparable(sync_sig) == _comparable(async_sig), name
        assert sync_sig.return_annotation == async_sig.return_annotation, name
        if name != "__init__":
            assert not inspect.iscoroutinefunction(sync_attr), name
            assert inspect.iscoroutinefunction(async_attr), name


def test_the_transport_parameter_takes_each_clients_own_kind():
    sync_param = inspect.signature(RerankerClient.__init__).parameters["transport"]
    async_param = inspect.signature(AsyncRerankerClient.__init__).parameters["transport"]
    assert {sync_param.annotation, async_param.annotation} == TRANSPORTS
