# syntax=docker/dockerfile:1
# reel-driver's two images, from one set of locked dependencies (requirements.lock):
#   docker build --target serve -t reel-driver-serve .   the prediction API on 0.0.0.0:8000
#   docker build --target train -t reel-driver-train .   the weekly job, `reel-driver retrain`
# Their environment, the manifests and the schedule: docs/deploying.md.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- the packages: one virtual environment a target, both pinned by the same lock
FROM ${BASE_IMAGE} AS packages
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY reel_driver ./reel_driver

FROM packages AS serve-packages
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --constraint requirements.lock .

# dvc-s3 and boto: the job pushes and pulls the DVC remote on MinIO
FROM packages AS train-packages
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --constraint requirements.lock '.[s3]'

# ---- what both run as: no root, the virtual environment first on PATH
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/reel-driver reel-driver
# LightGBM's wheel links the system's OpenMP (XGBoost's and scikit-learn's carry their own); the slim image has none
# hadolint ignore=DL3008
RUN python3 -c "import ctypes.util, sys; sys.exit(not ctypes.util.find_library('gomp'))" || { apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*; }

# ---- serve: reel-driver serve, its settings from serve.* in params.yaml and MLflow's variables
FROM runtime AS serve
COPY --from=serve-packages /opt/venv /opt/venv
WORKDIR /app
COPY params.yaml ./
USER 10001:10001
EXPOSE 8000
# 503 (no champion loaded yet) is unhealthy too: nothing to serve
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/reel-driver/health', timeout=4)"]
# uvicorn on SIGTERM: stops accepting, finishes the requests in flight, then exits
STOPSIGNAL SIGTERM
CMD ["reel-driver", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---- train: the weekly job; it clones the repository, so it needs git
FROM runtime AS train
# hadolint ignore=DL3008
RUN command -v git > /dev/null || { apt-get update && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*; }
COPY --from=train-packages /opt/venv /opt/venv
# the commit the image was built from: the job runs that commit's pipeline (CI passes it)
ARG REEL_DRIVER_COMMIT=""
ENV REEL_DRIVER_COMMIT=${REEL_DRIVER_COMMIT} REEL_DRIVER_WORKDIR=/home/reel-driver/work
USER 10001:10001
WORKDIR /home/reel-driver
CMD ["reel-driver", "retrain"]
