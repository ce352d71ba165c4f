"""Schemathesis (from PyPI) against the real server: every operation in the OpenAPI schema, every
check, valid and invalid bodies. It must find nothing: no server error, no answer that differs
from the schema, no schema-valid body refused, no invalid one accepted.

Each case is a real engine call on two cores, so the example count is modest; the seed is fixed
so that a failure can be replayed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from compat_helpers import ENV_KEYS

pytestmark = pytest.mark.engine

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
MAX_EXAMPLES = 25
SEED = 1


def run_schemathesis(server, tmp_path, seed: int, headers: dict[str, str] | None = None) -> str:
    """Run ``st run`` on every operation with every check; assert that it found nothing."""
    schema = httpx.get(f"{server.url}/openapi.json", headers=headers).json()
    operations = sum(len(methods) for methods in schema["paths"].values())
    served = httpx.get(f"{server.url}/info", headers=headers).json()["model"]
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{server.url}/openapi.json",
        "--checks=all",
        "--mode=all",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={seed}",
        "--workers=1",
        "--generation-database=none",
        "--request-timeout=120",
        "--no-color",
        "--output-sanitize=false",
    ]
    for name, value in (headers or {}).items():
        command.append(f"--header={name}: {value}")
    started = time.perf_counter()
    run = subprocess.run(
        command,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "SCHEMATHESIS_SERVED_MODEL": served},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - started
    out = run.stdout + run.stderr
    generated = re.search(r"(\d+) generated", out)
    print(f"schemathesis: {generated and generated.group(0)} cases in {seconds:.0f} s")
    assert run.returncode == 0, out[-8000:]
    assert f"Selected: {operations}/{operations}" in out and f"Tested: {operations}" in out, out
    # Warnings count too: "missing test data" on an operation means its valid cases never got
    # past a 404, so that operation's scoring went untested.
    assert "No issues found" in out, out[-8000:]
    assert generated and int(generated.group(1)) >= operations * 10
    return out


def test_schemathesis_finds_no_failure(minilm_server, tmp_path):
    run_schemathesis(minilm_server, tmp_path, seed=1)


def test_schemathesis_finds_no_failure_with_an_api_key(keyed_server, tmp_path):
    # The schema declares the bearer key here, so "ignored_auth" also checks that every
    # operation but the probes refuses a request without it.
    run_schemathesis(
        keyed_server, tmp_path, seed=3, headers={"Authorization": f"Bearer {ENV_KEYS[0]}"}
    )
