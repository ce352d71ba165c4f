"""``reranker-server``: run the service with uvicorn.

Command-line options override ``RERANKER_*`` environment variables, which override defaults.
"""

from __future__ import annotations

import argparse
import logging

from .settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="reranker-server",
        description="Serve a reranker model over HTTP (see README for every RERANKER_* setting).",
    )
    p.add_argument("--model", help="model directory or hub id (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--served-model-name")
    p.add_argument(
        "--model-family", choices=["auto", "cross-encoder", "llm-reranker", "bi-encoder"]
    )
    p.add_argument(
        "--engine-url",
        dest="engine_urls",
        action="append",
        help="a `vllm serve` engine to use instead of an in-process one (repeatable)",
    )
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import uvicorn

    from .app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
