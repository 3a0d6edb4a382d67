#!/usr/bin/env bash
# Runs the whole test suite: unit tests, then the integration tests against throwaway
# PostgreSQL clusters and MariaDB servers, with Rust, Python grpcio and grpcurl clients.
# Installs what a fresh machine lacks first (see scripts/prereqs.sh).
#
# With no arguments, the test binaries run side by side (DSR_TEST_JOBS at a time, 3 by
# default; see scripts/parallel-tests.py), every one to its end, and every failure is named
# at the end. With arguments, they are cargo test's, as in `scripts/test.sh --test extract`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh --clients
export DSR_TEST_VENV="$PWD/.venv"
if [ $# -gt 0 ]; then
    exec cargo test --locked --no-fail-fast "$@"
fi
started=$SECONDS
cargo test --locked --no-run --message-format=json-render-diagnostics \
    | python3 scripts/parallel-tests.py "${DSR_TEST_JOBS:-3}"
cargo test --locked --doc
echo "test.sh: $((SECONDS - started)) s, compiling included" >&2
