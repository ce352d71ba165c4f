"""Engine settings left unset are chosen per device, the way ``DTYPE=auto`` is (pure logic)."""

from __future__ import annotations

import os

from reranker_server.inprocess_backend import (
    SMALL_MACHINE_CORES,
    cpu_reserved_cores,
    engine_kwargs,
    tcmalloc_preload,
    usable_cores,
)
from reranker_server.model_family import ModelFamily
from reranker_server.settings import Settings


def test_unset_settings_take_the_cpu_choices_on_cpu_and_vllms_defaults_on_a_gpu():
    s = Settings(model="m")
    cpu = engine_kwargs(s, ModelFamily.CROSS_ENCODER, on_cpu=True)
    gpu = engine_kwargs(s, ModelFamily.CROSS_ENCODER, on_cpu=False)
    assert (cpu["enforce_eager"], cpu["gpu_memory_utilization"]) == (True, 0.35)
    # vLLM's own GPU defaults: CUDA graphs captured, 90% of the card.
    assert (gpu["enforce_eager"], gpu["gpu_memory_utilization"]) == (False, 0.9)


def test_settings_given_win_on_either_device():
    s = Settings(model="m", enforce_eager=True, gpu_memory_utilization=0.5)
    for on_cpu in (True, False):
        kw = engine_kwargs(s, ModelFamily.LLM_RERANKER, on_cpu=on_cpu)
        assert (kw["enforce_eager"], kw["gpu_memory_utilization"]) == (True, 0.5)
    off = Settings(model="m", enforce_eager=False)
    assert engine_kwargs(off, ModelFamily.BI_ENCODER, on_cpu=True)["enforce_eager"] is False


def test_the_environment_sets_them(monkeypatch):
    monkeypatch.setenv("RERANKER_ENFORCE_EAGER", "false")
    monkeypatch.setenv("RERANKER_GPU_MEMORY_UTILIZATION", "0.8")
    kw = engine_kwargs(Settings(model="m"), ModelFamily.CROSS_ENCODER, on_cpu=True)
    assert (kw["enforce_eager"], kw["gpu_memory_utilization"]) == (False, 0.8)


def test_the_cpu_engine_reserves_no_core_on_small_machines_and_vllms_one_on_larger():
    unset = Settings(model="m")
    assert cpu_reserved_cores(unset, 2) == 0
    assert cpu_reserved_cores(unset, SMALL_MACHINE_CORES) == 0
    assert cpu_reserved_cores(unset, SMALL_MACHINE_CORES + 1) is None  # vLLM's own default
    assert cpu_reserved_cores(Settings(model="m", cpu_reserved_cores=1), 2) == 1
    assert cpu_reserved_cores(Settings(model="m", cpu_reserved_cores=0), 64) == 0
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_the_cpu_engine_gets_a_system_tcmalloc_in_front_of_ld_preload(monkeypatch):
    import ctypes.util

    libs = {"tcmalloc_minimal": "libtcmalloc_minimal.so.4"}
    monkeypatch.setattr(ctypes.util, "find_library", libs.get)
    on = Settings(model="m")
    assert tcmalloc_preload(on, "") == "libtcmalloc_minimal.so.4"
    assert tcmalloc_preload(on, "/x/libgomp.so") == "libtcmalloc_minimal.so.4:/x/libgomp.so"
    assert tcmalloc_preload(on, "/opt/libtcmalloc.so") is None  # one is preloaded already
    assert tcmalloc_preload(Settings(model="m", cpu_tcmalloc=False), "") is None
    libs.clear()  # none installed: glibc's malloc, with a warning
    assert tcmalloc_preload(on, "") is None
