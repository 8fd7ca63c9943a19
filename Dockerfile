# hpo in a container. Used by docker-compose.yml (PostgreSQL, `hpo create`, N × `hpo worker`,
# optuna-dashboard); on its own: docker build -t hpo . && docker run --rm hpo --help
FROM python:3.11-slim-bookworm

# Fashion-MNIST from Debian (no download at run time), decompressed once at build below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# PyTorch's CPU wheels: the default index would pull gigabytes of CUDA libraries.
RUN pip install --no-cache-dir "torch<=2.14.1" "torchvision<=0.29.1" \
    --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY hpo ./hpo
RUN pip install --no-cache-dir .
COPY studies ./studies

ENV HPO_DATA_DIR=/opt/fashion-mnist PYTHONUNBUFFERED=1
RUN python -c "from hpo.train.data import locate; locate()"

RUN useradd --create-home --uid 1000 hpo
USER hpo
ENTRYPOINT ["hpo"]
CMD ["--help"]
