#!/usr/bin/env bash
# Builds the Go client example:
#
#   examples/go/build.sh OUTPUT-BINARY
#
# The Go stubs are generated from proto/dsr/v1/dsr.proto with protoc, protoc-gen-go and
# protoc-gen-go-grpc into a temporary GOPATH (import path dsrconnector/gen/dsr/v1), and the
# example is built in GOPATH mode against the Go packages Debian installs under
# /usr/share/gocode (grpc-go, google.golang.org/protobuf). Nothing is downloaded and nothing
# generated is left behind. scripts/prereqs.sh --clients installs what it needs.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTPUT-BINARY" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
case "$1" in
    /*) out="$1" ;;
    *) out="$PWD/$1" ;;
esac

gocode=/usr/share/gocode/src
missing=()
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(libprotobuf-dev)
command -v protoc-gen-go >/dev/null 2>&1 || missing+=(protoc-gen-go)
command -v protoc-gen-go-grpc >/dev/null 2>&1 || missing+=(protoc-gen-go-grpc)
[ -d "$gocode/google.golang.org/grpc" ] || missing+=(golang-google-grpc-dev)
# The 1.3 runtime of golang-goprotobuf-dev panics on oneofs; 1.4 and later have registry.go.
[ -f "$gocode/github.com/golang/protobuf/proto/registry.go" ] \
    && [ -d "$gocode/google.golang.org/protobuf/encoding/protojson" ] \
    || missing+=(golang-github-golang-protobuf-1-5-dev)
if [ ${#missing[@]} -gt 0 ]; then
    echo "examples/go/build.sh: cannot build the Go example; missing Debian packages: ${missing[*]}" >&2
    echo "  Debian/Ubuntu: sudo apt-get install golang-go protobuf-compiler libprotobuf-dev" \
        "protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev" >&2
    echo "  or, as root: scripts/prereqs.sh --clients" >&2
    exit 1
fi

gopath="$(mktemp -d "${TMPDIR:-/tmp}/dsr-go-example.XXXXXX")"
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src"

import_path=dsrconnector/gen/dsr/v1
mapping="Mdsr/v1/dsr.proto=$import_path;dsrv1"
protoc -I "$root/proto" -I /usr/include \
    --go_out="$gopath/src" --go_opt="$mapping" \
    --go-grpc_out="$gopath/src" --go-grpc_opt="$mapping" \
    "$root/proto/dsr/v1/dsr.proto"

# GOPATH mode, Debian's Go packages only: no module proxy, no network.
export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOPROXY=off GOFLAGS=
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
    export GOCACHE="$gopath/cache"
fi
cd "$here"
go build -o "$out" .
echo "built $out" >&2
