#!/usr/bin/env bash
# Creates target/pyenv, a Python venv with grpcio (gRPC's C core), which the
# end-to-end tests use as an unmodified third-party Workload API and Admin
# API client. Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/pyenv
requirements=tests/python/requirements.txt

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p target
    if ! python3 -m venv "$venv" 2>/dev/null; then
        # Debian and Ubuntu ship venv separately.
        rm -rf "$venv"
        apt-get update -qq && apt-get install -y -qq python3-venv
        python3 -m venv "$venv"
    fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
"$venv/bin/python" -c 'import grpc; print("target/pyenv: grpcio", grpc.__version__)'
