"""``reranker-server``: run the service with uvicorn.

Command-line options override ``RERANKER_*`` environment variables, which override defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from .model_family import FAMILY_CHOICES
from .settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="reranker-server",
        description="Serve a reranker model over HTTP (see README for every RERANKER_* setting).",
    )
    p.add_argument("--model", help="model directory or hub id (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--served-model-name")
    p.add_argument("--model-family", choices=FAMILY_CHOICES)
    p.add_argument(
        "--engine-url",
        dest="engine_urls",
        action="append",
        help="a `vllm serve` engine to use instead of an in-process one (repeatable)",
    )
    p.add_argument("--workers", type=int, help="uvicorn workers (above 1 needs --engine-url)")
    p.add_argument("--redis-url", help="Redis URL of a score cache shared by workers")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--dtype")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--batch-max-pairs", type=int)
    p.add_argument("--batch-max-wait-ms", type=float)
    p.add_argument("--cache-size", type=int)
    p.add_argument("--max-pairs-per-request", type=int)
    p.add_argument("--log-level")
    return p.parse_args(argv)


def _export(overrides: dict[str, object]) -> None:
    """Hand command-line settings to worker processes, which read them from the environment."""
    for name, value in overrides.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        os.environ[f"RERANKER_{name.upper()}"] = str(value)


def _prepare_multiprocess_metrics() -> None:
    """Workers write their metrics to one directory; it must start empty."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="reranker-metrics-")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import uvicorn

    if settings.workers > 1:
        if not settings.engine_urls:
            sys.exit(
                "reranker-server: --workers above 1 needs --engine-url (RERANKER_ENGINE_URLS): "
                "each worker would otherwise load its own copy of the model. Start the engine "
                "with `python -m vllm.entrypoints.openai.api_server --model ... --runner pooling`."
            )
        _export(overrides)
        _prepare_multiprocess_metrics()
        uvicorn.run(
            "reranker_server.app:create_app",
            factory=True,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
        )
        return

    from .app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
