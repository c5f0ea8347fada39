#!/usr/bin/env bash
# Lint protos/ with buf, offline.
#
# Installs the buf CLI from npm (@bufbuild/buf, pinned) into a cache directory
# when it is missing (tools/install_buf.sh), materialises the googleapis include
# module that buf.yaml lists (build/buf-include), and runs `buf lint` from the
# repository root.
#
# Environment: PYTHON (default: python); BUF_VERSION and BUF_NPM_DIR, see
# tools/install_buf.sh.
# Extra arguments are passed to `buf lint` (e.g. --error-format=json).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
buf="$(bash "$root/tools/install_buf.sh")"

cd "$root"
"$python" tools/generate_protos.py --buf-include build/buf-include >/dev/null
"$buf" lint "$@"
echo "buf lint: OK ($("$buf" --version))"
