# hpo in a container. Used by docker-compose.yml (PostgreSQL, `hpo create`, N × `hpo worker`,
# optuna-dashboard); on its own: docker build -t hpo . && docker run --rm hpo --help
#
# BASE: a Debian image with Python 3.11+ and its venv module (and apt); by default the public
# Python image. Where no registry is reachable, build from a local one (tests/test_docker.py
# builds from a debootstrapped Debian with python3 and python3-venv):
#   docker build --build-arg BASE=local/bookworm-python3 -t hpo:local .
# TORCH_INDEX_URL / PIP_INDEX_URL: where pip finds PyTorch's CPU wheels and everything else;
# point both at a mirror or a local wheelhouse to build without the internet.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# Fashion-MNIST from Debian (no download at run time), decompressed once at build below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist pgbouncer \
    && rm -rf /var/lib/apt/lists/*

# A virtualenv works alike on the Python image and on a Debian python3 (which refuses pip
# installs into the system's Python).
RUN python3 -m venv /opt/hpo
ENV PATH=/opt/hpo/bin:$PATH PYTHONUNBUFFERED=1

WORKDIR /app
# PyTorch's CPU wheels: the default index would pull gigabytes of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" \
    "torch<=2.14.1" "torchvision<=0.29.1"
# hpo's dependencies in a layer of their own, so that a change to hpo's code reinstalls hpo alone.
ARG PIP_INDEX_URL=https://pypi.org/simple
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt \
    && pip install --no-cache-dir --index-url "$PIP_INDEX_URL" -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY hpo ./hpo
RUN pip install --no-cache-dir --no-deps .
COPY studies ./studies

ENV HPO_DATA_DIR=/opt/fashion-mnist
RUN python3 -c "from hpo.train.data import locate; locate()"

RUN useradd --create-home --uid 1000 hpo
USER hpo
ENTRYPOINT ["hpo"]
CMD ["--help"]
