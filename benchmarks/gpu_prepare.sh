#!/usr/bin/env bash
# Run HERE, before benchmarks/gpu_check.sh runs on a GPU machine lent through the device tool.
#
# That machine has Python 3.12 with PyTorch, numpy, click and pytest, but no Optuna or
# SQLAlchemy, no package registry and no Fashion-MNIST, and it only gets this repository's
# working tree. This fills the ignored folder .gpu/ with what it lacks: the wheels hpo needs
# (downloaded here for that machine's Python) and the data's four .gz files (30 MB).
# Name the folder in the call: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"]).
#
#   bash benchmarks/gpu_prepare.sh                  # for the device (CPython 3.12, x86-64)
#   GPU_PYTHON_VERSION=3.11 bash benchmarks/gpu_prepare.sh   # to rehearse with Python 3.11
set -euo pipefail
cd "$(dirname "$0")/.."
version=${GPU_PYTHON_VERSION:-3.12}
data=${HPO_DATA_DIR:-../shared/data/fashion-mnist}
# hpo's imports that the GPU image lacks, at the versions this project is tested with.
wheels=(optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3)

rm -rf .gpu
mkdir -p .gpu/whl .gpu/data/FashionMNIST/raw
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
  manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
  --implementation cp "${platforms[@]}" -d .gpu/whl "${wheels[@]}" \
  2> >(grep -v "is ignored: it is neither" >&2)

raw=$data/FashionMNIST/raw
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
  t10k-labels-idx1-ubyte; do
  if [ -f "$raw/$f.gz" ]; then
    cp "$raw/$f.gz" .gpu/data/FashionMNIST/raw/
  elif [ -f "$raw/$f" ]; then
    gzip -c "$raw/$f" >".gpu/data/FashionMNIST/raw/$f.gz"
  else
    echo "error: $raw/$f(.gz) not found; set HPO_DATA_DIR to a folder with FashionMNIST/raw" >&2
    exit 2
  fi
done
ls .gpu/whl
du -sh .gpu
echo 'next: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=540)'
