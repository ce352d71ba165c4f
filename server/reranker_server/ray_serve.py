"""The Ray Serve app: `serve run reranker_server.ray_serve:build_app`, or deploy/ray/config.yaml.

Two deployments:

- ``RerankerIngress``: today's FastAPI app (routes, auth, limits, compat shapes, the score cache,
  the batching queue) under ``@serve.ingress``, N replicas behind Ray's HTTP proxy. Set
  ``redis_url`` so that its replicas share scores, as ``--workers`` do.
- ``RerankerEngine``: one vLLM engine per replica (``ray_engine.EngineReplica``), reached from the
  ingress through a ``DeploymentHandle`` (``ray_backend.RayEngineBackend``).

``build_app``'s arguments (the config's ``args``) are ``Settings`` fields, e.g. ``model``,
``dtype``, ``engine_batches_in_flight``; ``RERANKER_*`` variables in the replicas' environment
apply too. Replica counts, autoscaling, ``max_ongoing_requests`` and ``ray_actor_options`` are
the config's per-deployment options; the defaults below suit one CPU engine.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from prometheus_client import Gauge
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from .app import create_app
from .backend import EngineState
from .ray_backend import RayEngineBackend
from .ray_engine import EngineReplica
from .service import RerankService
from .settings import Settings

INGRESS = "RerankerIngress"
ENGINE = "RerankerEngine"

# Two batches in flight per engine replica, as for a remote engine: the next one is tokenised
# while the engine runs this one. Ray sends a replica no more than this at once.
ENGINE_BATCHES_PER_REPLICA = 2

EngineDeployment = serve.deployment(
    EngineReplica,
    name=ENGINE,
    max_ongoing_requests=ENGINE_BATCHES_PER_REPLICA,
    ray_actor_options={"num_cpus": 1},
    # vLLM takes 20-40 s to load a model on a CPU, longer on a GPU with a large model.
    health_check_period_s=5,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=5,
)


def ingress_broken(service: RerankService) -> str | None:
    """Why this ingress replica cannot serve until it is replaced, or None.

    Its batch queue broke (a batch hung past ``engine_batch_timeout_s``, or the queue's task
    died): the queue then refuses all work for good, and /health answers 503 with that reason.
    The engine failing to start in this replica (its tokenizer) is the same. No engine replica
    running is not: that is Ray's to fix on the engine deployment, and a new ingress would not
    help, so /health reports it and the ingress stays.
    """
    if service.queue.broken is not None:
        return f"the batch queue is broken: {service.queue.broken}"
    backend = service.backend
    if backend.state in (EngineState.DEAD, EngineState.FAILED):
        return backend.unavailable_reason()
    return None


@serve.deployment(name=INGRESS, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress()
class RerankerIngress:
    """One replica of the HTTP service; its engine is the ``RerankerEngine`` deployment."""

    def __init__(self, engine: DeploymentHandle, settings: dict[str, Any]) -> None:
        self._engine = engine
        self._settings = settings
        self._app: FastAPI | None = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        settings = Settings(**self._settings)
        if settings.engine_batches_in_flight is None:
            # The engines are remote here: the in-process default of one batch would keep all
            # but one engine replica idle.
            settings.engine_batches_in_flight = ENGINE_BATCHES_PER_REPLICA
        context = serve.get_replica_context()
        backend = RayEngineBackend(
            settings, self._engine, app_name=context.app_name, deployment_name=ENGINE
        )
        app = create_app(settings, backend)
        replicas = Gauge(
            "reranker_engine_replicas",
            "Engine replicas of the Ray deployment by state, as Ray's controller reports them.",
            ["state"],
            registry=app.state.service.metrics.registry,
        )
        for state in ("RUNNING", "STARTING", "UNHEALTHY", "STOPPING"):
            replicas.labels(state).set_function(
                lambda s=state: backend.replica_states.get(s, 0)  # type: ignore[misc]
            )
        self._app = app
        return app

    def check_health(self) -> None:
        """Ray Serve's periodic health check: raising makes Ray replace this replica."""
        if self._app is not None:
            broken = ingress_broken(self._app.state.service)
            if broken is not None:
                raise RuntimeError(broken)


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application: ``serve run reranker_server.ray_serve:build_app model=...``."""
    settings = dict(args)
    Settings(**settings)  # a bad argument fails here, at deploy time, not in every replica
    return RerankerIngress.bind(EngineDeployment.bind(settings), settings)  # type: ignore[attr-defined]
