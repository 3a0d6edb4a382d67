#!/usr/bin/env bash
# Runs the service on the built-in demo: a throwaway PostgreSQL with a demo shop's data,
# served as source "demo" on 127.0.0.1:50051. Extra arguments go to `dsr-connector demo`
# (for example --listen 127.0.0.1:50052). Ctrl-C stops it and removes all data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
if [ ! -x target/debug/dsr-connector ]; then
    echo "demo: building dsr-connector (debug); the first build takes 3 to 8 minutes on 2 cores" >&2
fi
if [ ! -x .venv/bin/grpcurl ] && ! command -v grpcurl >/dev/null 2>&1; then
    echo "demo: grpcurl is not installed; scripts/prereqs.sh --clients puts it in .venv/bin" >&2
fi
# A debug build: the quickest to build on a fresh machine, and fast enough for a demo.
exec cargo run --locked --bin dsr-connector -- demo "$@"
