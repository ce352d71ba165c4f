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

pytestmark = pytest.mark.engine

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
MAX_EXAMPLES = 25
SEED = 1


def test_schemathesis_finds_no_failure(minilm_server, tmp_path):
    operations = sum(
        len(methods)
        for methods in httpx.get(f"{minilm_server.url}/openapi.json").json()["paths"].values()
    )
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        f"{minilm_server.url}/openapi.json",
        "--checks=all",
        "--mode=all",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--generation-database=none",
        "--request-timeout=120",
        "--no-color",
        "--output-sanitize=false",
    ]
    started = time.perf_counter()
    run = subprocess.run(
        command,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
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
    assert "No issues found" in out, out[-8000:]
    assert generated and int(generated.group(1)) >= operations * 10
