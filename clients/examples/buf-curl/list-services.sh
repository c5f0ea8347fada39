#!/usr/bin/env bash
# List the services and methods dicomstore serves, from server reflection alone.
#
#   DICOMSTORE_GRPC_ENDPOINT=127.0.0.1:50051 ./list-services.sh
set -euo pipefail
. "$(dirname "$0")/common.sh"

echo "services:"
buf_curl --list-services "http://$endpoint" | sed 's/^/  /'
echo "methods:"
buf_curl --list-methods "http://$endpoint" | sed 's/^/  /'
