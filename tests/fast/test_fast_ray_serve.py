"""The Ray Serve app's parts that need no cluster: the ingress's health check on the real app
(``FakeBackend``), and deploy/ray/config.yaml checked against Ray Serve's own schema."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytestmark = pytest.mark.fast

pytest.importorskip("ray.serve", reason="the `ray` extra is not installed")

from ray.serve.schema import ServeDeploySchema  # noqa: E402 - only with ray installed
from reranker_server.backend import EngineState  # noqa: E402
from reranker_server.ray_serve import (  # noqa: E402
    ENGINE,
    ENGINE_BATCHES_PER_REPLICA,
    INGRESS,
    RerankerIngress,
)

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "config.yaml"


def _check_health(app) -> None:  # noqa: ANN001 - a FastAPI app
    """``RerankerIngress.check_health`` as Ray calls it, on a replica whose app is ``app``."""
    RerankerIngress.func_or_class.check_health(SimpleNamespace(_app=app))


def test_ingress_health_check_passes_while_healthy_and_raises_once_the_queue_broke(serve):
    fake = serve()
    app = fake.client.app
    _check_health(app)  # healthy: returns
    _check_health(None)  # the app not built yet: nothing to judge, returns
    fake.client.portal.call(
        app.state.service.queue.break_down, "the engine did not answer a batch within 1 s"
    )
    health = fake.client.get("/health")
    assert health.status_code == 503
    with pytest.raises(RuntimeError, match="batch queue is broken: the engine did not answer"):
        _check_health(app)


def test_ingress_health_check_raises_when_the_engine_failed_to_start(serve):
    fake = serve(ready=False)
    app = fake.client.app
    _check_health(app)  # loading is not a failure
    fake.backend.error = "the engine failed to start: OSError: the tokenizer could not be read"
    fake.backend.state = EngineState.FAILED
    with pytest.raises(RuntimeError, match="the tokenizer could not be read"):
        _check_health(app)


def test_the_ray_config_is_valid_for_ray_serve_and_its_numbers_agree():
    raw = yaml.safe_load(CONFIG.read_text())
    config = ServeDeploySchema.parse_obj(raw)  # Ray Serve's own validation of `serve deploy`
    (app,) = config.applications
    assert app.import_path == "reranker_server.ray_serve:build_app"
    module, attr = app.import_path.split(":")
    build_app = getattr(importlib.import_module(module), attr)
    build_app(app.args)  # its args are Settings fields (a bad one raises here)

    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {INGRESS, ENGINE}
    engine = deployments[ENGINE]
    assert engine.max_ongoing_requests == ENGINE_BATCHES_PER_REPLICA
    ingress_replicas = deployments[INGRESS].num_replicas
    max_engines = engine.autoscaling_config["max_replicas"]
    # engine_batches_in_flight is per ingress replica (each has its own queue): all of them
    # together fill every engine replica's max_ongoing_requests at max_replicas, and no more.
    in_flight = app.args["engine_batches_in_flight"]
    assert in_flight * ingress_replicas == engine.max_ongoing_requests * max_engines
