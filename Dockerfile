# syntax=docker/dockerfile:1
# recsys-mtl image: one image for training, the pipeline and the scoring server.
#
#   docker build -t recsys-mtl:0.1.0 .                                  # CPU: torch + fbgemm-gpu-cpu
#   docker build --build-arg VARIANT=gpu -t recsys-mtl:0.1.0-gpu .      # GPU: CUDA torch + fbgemm-gpu
#
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" recsys-mtl:0.1.0
#       serves the newest complete model version under ./models (the --out of `recsys-mtl export`) on
#       port 8000; GET /healthz, /readyz, /metrics, POST /v1/score. Other commands replace the CMD:
#   docker run --rm -v "$PWD/data:/data" recsys-mtl:0.1.0 train --config /data/config.yaml --out /data/runs/latest
#   docker run --rm --gpus all --shm-size 8g -v "$PWD/data:/data" recsys-mtl:0.1.0-gpu \
#       train --config /data/config.yaml --out /data/runs/latest --nproc 8
#
# Mount points (empty in the image, owned by the non-root user recsys, uid/gid 10001):
#   /models  model root the default CMD serves (read-only is enough)
#   /data    datasets, configs, run directories, pipeline work dirs (Kubernetes: deploy/README.md)
# The pins are the ones `make setup` installs (requirements/*.txt); torchrec goes in with --no-deps so
# that it cannot replace the fbgemm build chosen here. The GPU variant needs no CUDA base image: the
# CUDA runtime libraries come with the torch / fbgemm-gpu wheels, the driver from the host.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS builder
ARG VARIANT=cpu
ARG CUDA_INDEX=cu128
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/ requirements/
RUN if [ "$VARIANT" = "gpu" ]; then \
        pip install --extra-index-url "https://download.pytorch.org/whl/${CUDA_INDEX}" -r requirements/torch-gpu.txt; \
    else \
        pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements/torch-cpu.txt; \
    fi \
    && pip install -r requirements/runtime.txt \
    && pip install --no-deps -r requirements/torchrec.txt
COPY pyproject.toml README.md ./
COPY recsys_mtl/ recsys_mtl/
COPY serving/ serving/
COPY pipelines/ pipelines/
RUN pip install --no-deps . && python -c "import recsys_mtl"

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN groupadd --gid 10001 recsys \
    && useradd --create-home --uid 10001 --gid 10001 recsys \
    && mkdir -p /models /data \
    && chown recsys:recsys /models /data
COPY --from=builder /opt/venv /opt/venv
# no .pyc writes at run time: the venv is compiled at install, and Kubernetes runs the server with a
# read-only root file system (only /tmp is writable there)
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER recsys
WORKDIR /home/recsys
EXPOSE 8000
# Docker's own liveness check of the server (the default CMD). Kubernetes ignores it and uses the
# probes in deploy/; a container running train or pipeline instead reports "unhealthy", harmlessly.
# python's urllib, as slim images have no curl: any error or non-2xx status exits non-zero.
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["recsys-mtl"]
CMD ["serve", "--model", "/models", "--host", "0.0.0.0", "--port", "8000"]
