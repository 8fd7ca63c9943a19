#!/usr/bin/env bash
# The browser tests (tests/test_dashboard.py) open the dashboard and the HTML report in headless
# Chromium through chromedriver. Install Debian's chromium and chromium-driver when missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian's chromium and chromium-driver for the browser tests" >&2
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
  chromium chromium-driver >/dev/null
