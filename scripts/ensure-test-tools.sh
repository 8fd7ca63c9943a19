#!/usr/bin/env bash
# System tools some tests need, installed from Debian's packages when missing:
# - docker-compose: validates docker-compose.yml (`docker-compose config`; no Docker daemon);
# - chromium + chromium-driver: the browser tests open the dashboard and the HTML report;
# - slurm-wlm + munge: tests/test_slurm.py starts a single-node Slurm cluster;
# - docker.io + debootstrap: tests/test_docker.py starts dockerd and builds images from a
#   debootstrapped base (no image registry is reachable);
# - kubectl (Debian's kubernetes-client, where no kubectl is installed): `kubectl kustomize`
#   builds deploy/k8s for tests/test_k8s.py (its kustomize, v2.0.3, builds it as v5 does).
# - nftables + pgbouncer: the multi-host bed in network namespaces (tests/cluster/, packet
#   loss with nftables since the kernel may lack netem; PgBouncer in transaction pooling).
# Without apt-get (not Debian/Ubuntu) this only says what is missing; CI must have them.
set -euo pipefail
missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || missing+=(munge)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
# the cluster bed (tests/cluster/, tests/test_cluster.py)
{ command -v nft || [ -x /usr/sbin/nft ]; } >/dev/null 2>&1 || missing+=(nftables)
{ command -v pgbouncer || [ -x /usr/sbin/pgbouncer ]; } >/dev/null 2>&1 || missing+=(pgbouncer)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing test tools: ${missing[*]} (install them; without them some tests skip)" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages for the tests: ${missing[*]}" >&2
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
  "${missing[@]}" >/dev/null
