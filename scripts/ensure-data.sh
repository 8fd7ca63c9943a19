#!/usr/bin/env bash
# Make sure Fashion-MNIST can be found before the main job runs. hpo itself looks in
# ${HPO_DATA_DIR:-./data}, then in Debian's /usr/share/datasets/fashion-mnist, then tries
# torchvision's download; on a Debian machine without any of these, install Debian's package.
set -euo pipefail
data_dir=${HPO_DATA_DIR:-data}
if [ -f "$data_dir/FashionMNIST/raw/train-images-idx3-ubyte" ] \
   || [ -f "$data_dir/FashionMNIST/raw/train-images-idx3-ubyte.gz" ] \
   || [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Fashion-MNIST not found; installing Debian's dataset-fashion-mnist" >&2
  if $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
     || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }; then
    exit 0
  fi
  echo "apt-get could not install dataset-fashion-mnist; hpo will try torchvision's download" >&2
fi
