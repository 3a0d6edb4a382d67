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
if git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null; then
    "$buf" breaking --against '.git#ref=HEAD~1'
else
    echo "buf breaking: HEAD has no parent in this clone; nothing to compare against" >&2
    exit 1
fi
