"""A two-node Ray cluster on loopback, and helpers to find, kill and count Serve replicas.

The head raylet listens on 127.0.0.3, the worker raylet on 127.0.0.2 (its own node, as a second
machine would be). Not 127.0.0.1: ``ray start`` rewrites exactly "127.0.0.1" (and "localhost")
to the machine's routable address (``services.resolve_ip_for_localhost``), so on a machine with
a network interface the head left loopback (seen: its GCS on 192.0.2.2). Each node offers one
``engine_slot``, and each engine replica needs one, so two engine
replicas land on different nodes. The cluster's processes are started with ``--block`` in
their own session and killed by process group at the end: ``ray stop`` would kill every Ray
process on this shared machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from .processes import free_port

APP = "reranker"
HEAD_IP = "127.0.0.3"
#: Token authentication off, explicitly, for the loopback test cluster and its clients.
AUTH_ENV = {"RAY_AUTH_MODE": "disabled"}


class LoopbackRayCluster:
    """``ray start --head`` on 127.0.0.3 and ``ray start --address`` on 127.0.0.2."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.address = f"{HEAD_IP}:{self.port}"
        self.http_port = free_port()
        # Short: Ray's unix socket paths live under it and must stay under 108 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="ray18-", dir="/tmp")
        # Ray 2.60 turns token authentication on for a new cluster, and for any cluster once a
        # token exists in ~/.ray/auth_token (left there by any earlier ray.init on the machine),
        # so a cluster started without it refused the probe ("InvalidAuthToken"). This cluster is
        # on loopback only, and its driver and probes are this process and its children: the
        # mode is set explicitly for all of them (see ``AUTH_ENV``), whatever ~/.ray holds. It
        # is set in this process's environment and left there: the test session is the driver.
        os.environ.update(AUTH_ENV)
        env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            # The driver's import path (the branch's server and client), for every replica.
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        common = ["--num-cpus", "2", "--resources", '{"engine_slot": 1}', "--block"]
        ray_cli = [sys.executable, "-m", "ray.scripts.scripts", "start"]
        self._logs = [open(log_dir / "ray-head.log", "wb"), open(log_dir / "ray-worker.log", "wb")]
        head = [
            *ray_cli,
            "--head",
            "--node-ip-address",
            HEAD_IP,
            "--port",
            str(self.port),
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            self.temp_dir,
            *common,
        ]
        self.procs = [
            subprocess.Popen(
                head,
                env=env,
                stdout=self._logs[0],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ]
        try:
            self._start_worker(ray_cli, common, env)
        except BaseException:
            self.stop()  # a cluster that failed to start must not outlive the session
            raise

    def _start_worker(self, ray_cli: list[str], common: list[str], env: dict[str, str]) -> None:
        self._wait_for_nodes(1)
        worker = [*ray_cli, "--address", self.address, "--node-ip-address", "127.0.0.2", *common]
        self.procs.append(
            subprocess.Popen(
                worker,
                env=env,
                stdout=self._logs[1],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        self._wait_for_nodes(2)

    def _wait_for_nodes(self, n: int, timeout: float = 120.0) -> None:
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(
                [sys.executable, "-c", probe, self.address], capture_output=True, text=True
            )
            if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(n)]:
                return
            time.sleep(1)
        raise TimeoutError(f"the Ray cluster did not reach {n} nodes")

    def stop(self) -> None:
        import psutil

        for proc in reversed(self.procs):
            family = []
            try:
                family = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            _, alive = psutil.wait_procs(family, timeout=15)
            for p in alive:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        for log in self._logs:
            log.close()


def replica_actors(deployment: str, app: str = APP) -> list[str]:
    """The names of the live replica actors of a deployment."""
    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix)
    )


def _alive_replica_rows(deployment: str, app: str) -> list[dict[str, Any]]:
    """The GCS actor table's rows (``ray._private.state.actors``, a developer API) of a
    deployment's live replica actors: the state API (``ray.util.state.list_actors``) needs the
    dashboard, which the test cluster leaves off."""
    from ray._private.state import actors

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    table = actors(actor_state_name="ALIVE")
    rows = table.values() if isinstance(table, dict) else table
    return [a for a in rows if a["Name"].startswith(prefix)]


def replica_placement(deployment: str, app: str = APP) -> dict[str, tuple[str, str]]:
    """{replica actor name: (actor id, node id)} of a deployment's live replica actors."""
    return {
        a["Name"]: (a["ActorID"], a["Address"]["NodeID"])
        for a in _alive_replica_rows(deployment, app)
    }


def replica_pids(deployment: str, app: str = APP) -> dict[str, int]:
    """{replica actor name: process id} of a deployment's live replica actors (the id an
    ingress replica sends back in ``x-reranker-worker``)."""
    return {a["Name"]: int(a["Pid"]) for a in _alive_replica_rows(deployment, app)}


def kill_replica(name: str) -> None:
    """Kill a replica's actor as a crash would: no graceful shutdown, no restart by Ray itself
    (Serve's controller notices and starts a replacement)."""
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def replica_states(deployment: str, app: str = APP) -> dict[str, int]:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return {}
    states = status.deployments[deployment].replica_states
    return {str(getattr(k, "value", k)): int(v) for k, v in states.items() if v}


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
