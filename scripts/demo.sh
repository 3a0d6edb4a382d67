#!/usr/bin/env bash
# Runs the service on the built-in demo: a throwaway PostgreSQL with a demo shop's data,
# served as source "demo" on 127.0.0.1:50051. Extra arguments go to `dsr-connector demo`
# (for example --listen 127.0.0.1:50052). Ctrl-C stops it and removes all data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
# A debug build: the quickest to build on a fresh machine, and fast enough for a demo.
exec cargo run --locked --quiet --bin dsr-connector -- demo "$@"
