#!/usr/bin/env bash
# Install the buf CLI from npm (@bufbuild/buf, pinned) into a cache directory
# when it is missing or another version, and print its path on stdout.
#
# Used by tools/buf_lint.sh and by the tests that run `buf curl`
# (tests/e2e/test_examples.py); CI exports DICOMSTORE_BUF with the path.
#
# Environment: BUF_VERSION (default below),
# BUF_NPM_DIR (default: ${XDG_CACHE_HOME:-$HOME/.cache}/dicomstore/buf-$BUF_VERSION).
set -euo pipefail

buf_version="${BUF_VERSION:-1.75.0}"
npm_dir="${BUF_NPM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dicomstore/buf-$buf_version}"
buf="$npm_dir/node_modules/.bin/buf"

if ! [ -x "$buf" ] || [ "$("$buf" --version 2>/dev/null)" != "$buf_version" ]; then
    mkdir -p "$npm_dir"
    npm install --no-save --no-audit --no-fund --loglevel=error \
        --prefix "$npm_dir" "@bufbuild/buf@$buf_version" >&2
fi
echo "$buf"
