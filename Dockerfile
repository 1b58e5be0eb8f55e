# syntax=docker/dockerfile:1.7
# mfd-serve: the BentoML service (REST :3000, KServe-v2 gRPC :3001), CPU torch inside.
# GPU inference runs in Triton (its own image, k8s/components/triton); MFD_BACKEND=embedded runs in-process on CPU.
#
# Production build (from PyPI + the PyTorch CPU index, never a CUDA wheel):
#   docker build -t mfd-serve:0.1.0 .
# Offline-ish build (a local CPU wheel, a private CA for pip, a locally made base image):
#   cp /opt/wheels/torch-2.13.0+cpu-*.whl docker/wheels/
#   podman build --build-arg BASE_IMAGE=localhost/mfd-base:bookworm-py311 --build-arg TORCH_INDEX_URL= \
#     --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t mfd-serve:dev .
# (scripts/image_test.sh does exactly this, then runs and probes the container.)

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder
# torch is pinned to the CPU build: "+cpu" exists only on the PyTorch CPU index (or as a local wheel in
# docker/wheels), so a CUDA wheel from PyPI can never satisfy it.
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# docker/wheels: optional local wheels (empty in git). pip_ca: optional extra CA bundle for a TLS-intercepting
# proxy, mounted as a build secret so it never lands in a layer. torch first, in its own layer (cached across
# source changes). (DL3013: the pin is "torch==${TORCH_VERSION}", which hadolint cannot resolve.)
# hadolint ignore=DL3013
RUN --mount=type=bind,source=docker/wheels,target=/wheels \
    --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    pip install --no-compile --find-links /wheels ${TORCH_INDEX_URL:+--extra-index-url "${TORCH_INDEX_URL}"} \
        "torch==${TORCH_VERSION}" \
    && python -c "import torch, sys; sys.exit(torch.version.cuda is not None)"
WORKDIR /src
COPY pyproject.toml ./
COPY mfd_common/ mfd_common/
COPY training/ training/
COPY service/ service/
COPY mfd/ mfd/
# The project pins its own dependencies in pyproject.toml (DL3013 does not see those pins); torch==2.13.0 is
# already satisfied by the CPU build above. torch's C++ headers and test data (~145 MB) are not needed to serve.
# hadolint ignore=DL3013
RUN --mount=type=bind,source=docker/wheels,target=/wheels \
    --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    pip install --no-compile --find-links /wheels ".[serve]" \
    && python -c "import torch, sys; sys.exit(torch.version.cuda is not None)" \
    && torch_dir="$(python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
    && rm -rf "${torch_dir}/test" "${torch_dir}/include" \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mfd-serve" \
      org.opencontainers.image.description="MFD genomics model service (BentoML REST + KServe-v2 gRPC)"
# tini as PID 1: forwards SIGTERM to the whole process group (-g) and reaps zombies of BentoML's workers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 mfd \
    && useradd --system --uid 10001 --gid mfd --home-dir /home/mfd --create-home --shell /usr/sbin/nologin mfd
COPY --from=builder /opt/venv /opt/venv
# The bundled demo model. In Kubernetes the model-repository volume is mounted over /models and
# MFD_MODEL_REPOSITORY points at one immutable version, /models/<version> (k8s/base, k8s/model-loader).
COPY --chown=root:root model_repository/ /models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/mfd \
    BENTOML_HOME=/tmp/bentoml \
    BENTOML_DO_NOT_TRACK=true \
    MFD_MODEL_REPOSITORY=/models \
    MFD_BACKEND=embedded \
    MFD_DEVICE=cpu \
    MFD_GRPC_PORT=3001
WORKDIR /home/mfd
USER 10001:10001
EXPOSE 3000 3001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["bentoml", "serve", "service.service:MFDService", "--host", "0.0.0.0", "--port", "3000"]
