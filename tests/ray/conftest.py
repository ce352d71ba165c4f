"""The Ray tests' cluster: two raylets on loopback, Serve's proxy on a free port, per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")

from reranker_server.testing.ray_cluster import LoopbackRayCluster  # noqa: E402 - needs ray
from server_process import RedisProcess  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackRayCluster]:
    from ray import serve

    cluster = LoopbackRayCluster(tmp_path_factory.mktemp("ray"))
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": cluster.http_port})
        yield cluster
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server on loopback, for ingress replicas that share scores."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()
