# icrl on GPU hosts: the same locked environment as everywhere else, plus CUDA-enabled JAX.
#   docker build -t icrl .
#   docker run --gpus all --rm -v "$PWD/runs:/icrl/runs" icrl envs check
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 UV_PYTHON=3.11 UV_LINK_MODE=copy
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3-pip make ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m pip install --no-cache-dir "uv>=0.5"

WORKDIR /icrl
# Dependencies first (cached layer), from the committed lock; the `cuda` extra adds jax[cuda12].
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-install-project --extra cuda --no-dev
COPY icrl ./icrl
COPY envs ./envs
COPY experiments ./experiments
COPY datasets ./datasets
RUN uv sync --locked --extra cuda --no-dev

ENTRYPOINT ["uv", "run", "--no-sync", "icrl"]
CMD ["--help"]
