#!/usr/bin/env bash
# Checks the public contract: `buf lint` (the STANDARD rules, see buf.yaml), and `buf breaking`
# against the proto of the previous commit, so that no commit breaks clients built on the one
# before it. Needs buf (scripts/prereqs.sh --clients puts it in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
buf=buf
[ -x .venv/bin/buf ] && buf=.venv/bin/buf
echo "== buf lint"
"$buf" lint
echo "== buf breaking (against HEAD~1)"
parent() { git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; }
if ! parent && [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    git fetch -q --deepen=1 || true
fi
if parent; then
    "$buf" breaking --against '.git#ref=HEAD~1,subdir=proto'
elif [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    echo "buf breaking: SKIPPED, a shallow clone whose parent commit could not be fetched" >&2
else
    echo "buf breaking: HEAD is the first commit; nothing to compare against" >&2
fi
