#!/usr/bin/env bash
# Lint protos/ with buf, offline.
#
# Installs the buf CLI from npm (@bufbuild/buf, pinned) into a cache directory
# when it is missing, materialises the googleapis include module that buf.yaml
# lists (build/buf-include), and runs `buf lint` from the repository root.
#
# Environment: PYTHON (default: python), BUF_VERSION (default below),
# BUF_NPM_DIR (default: ${XDG_CACHE_HOME:-$HOME/.cache}/dicomstore/buf-$BUF_VERSION).
# Extra arguments are passed to `buf lint` (e.g. --error-format=json).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
buf_version="${BUF_VERSION:-1.75.0}"
npm_dir="${BUF_NPM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dicomstore/buf-$buf_version}"
buf="$npm_dir/node_modules/.bin/buf"

if ! [ -x "$buf" ] || [ "$("$buf" --version 2>/dev/null)" != "$buf_version" ]; then
    mkdir -p "$npm_dir"
    npm install --no-save --no-audit --no-fund --loglevel=error \
        --prefix "$npm_dir" "@bufbuild/buf@$buf_version" >&2
fi

cd "$root"
"$python" tools/generate_protos.py --buf-include build/buf-include >/dev/null
"$buf" lint "$@"
echo "buf lint: OK ($("$buf" --version))"
