"""Session fixtures of the docker tests: one Docker engine, one set of images, shared by every test
and removed at the end (images, dangling layers, BuildKit's cache; a dockerd started here is
stopped and its data root deleted)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from docker_engine import DockerEngine
from images import (
    build_base_image,
    build_reranker_image,
    build_stand_ins,
    remove_images,
)


@dataclass
class Images:
    base: str
    reranker: str
    stand_ins: list[str]
    build_log: str


@pytest.fixture(scope="session")
def docker_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    workdir = tmp_path_factory.mktemp("docker")
    engine = DockerEngine(workdir / "dockerd.log")
    engine.start()
    built: list[str] = []
    try:
        base = build_base_image(workdir)
        built.append(base)
        built += build_stand_ins(base)
        log = workdir / "reranker-build.log"
        built.append(build_reranker_image(base, workdir, log))
        yield Images(base=base, reranker=built[-1], stand_ins=built[1:-1], build_log=str(log))
    finally:
        remove_images(built)
        engine.stop()
