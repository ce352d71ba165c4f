"""Session fixtures of the docker tests: one Docker engine, one set of images, shared by every test
and removed at the end (images, dangling layers, BuildKit's cache; a dockerd started here is
stopped and its data root deleted). Each image is built the first time a test needs it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from docker_engine import DockerEngine
from images import (
    build_base_image,
    build_reranker_image,
    build_stand_ins,
    prune,
    remove_images,
)


@dataclass
class Images:
    base: str
    reranker: str
    stand_ins: list[str]
    build_log: str


@pytest.fixture(scope="session")
def docker_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docker")


@pytest.fixture(scope="session")
def docker_engine(docker_workdir: Path) -> Iterator[DockerEngine]:
    engine = DockerEngine(docker_workdir / "dockerd.log")
    engine.start()
    try:
        yield engine
    finally:
        prune()
        engine.stop()


@pytest.fixture(scope="session")
def base_image(docker_engine: DockerEngine, docker_workdir: Path) -> Iterator[str]:
    """Debian 12 from debootstrap: what a fresh machine has, and every other image's base."""
    base = build_base_image(docker_workdir)
    try:
        yield base
    finally:
        remove_images([base])


@pytest.fixture(scope="session")
def docker_images(base_image: str, docker_workdir: Path) -> Iterator[Images]:
    built: list[str] = []
    try:
        built += build_stand_ins(base_image)
        log = docker_workdir / "reranker-build.log"
        built.append(build_reranker_image(base_image, docker_workdir, log))
        yield Images(base=base_image, reranker=built[-1], stand_ins=built[:-1], build_log=str(log))
    finally:
        remove_images(built)
