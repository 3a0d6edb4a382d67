#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then the integration tests against throwaway
# PostgreSQL clusters, with Rust, Python grpcio and grpcurl clients.
# Installs what a fresh machine lacks first (see scripts/prereqs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh --clients
export DSR_TEST_VENV="$PWD/.venv"
cargo test --locked --no-fail-fast "$@"
