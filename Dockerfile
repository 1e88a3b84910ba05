# syntax=docker/dockerfile:1
# recsys-mtl image. CPU by default:      docker build -t recsys-mtl:0.1.0 .
# GPU (CUDA torch + fbgemm-gpu):         docker build --build-arg VARIANT=gpu -t recsys-mtl:0.1.0-gpu .
# The pins are the ones `make setup` installs (requirements/*.txt); torchrec goes in with --no-deps so
# that it cannot replace the fbgemm build chosen here.
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
RUN useradd --create-home --uid 10001 recsys
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER recsys
WORKDIR /home/recsys
ENTRYPOINT ["recsys-mtl"]
CMD ["--help"]
