# Sourced by the other scripts of this folder: where the server is, and how to
# call it with `buf curl` through server reflection (no .proto files needed).
#
# Environment:
#   DICOMSTORE_GRPC_ENDPOINT  host:port of the gRPC port (default 127.0.0.1:50051)
#   DICOMSTORE_PROJECT        the project of resource names (default demo)
#   DICOMSTORE_LOCATION       the location of resource names (default local)
#   DICOMSTORE_BUF            the buf binary (default: buf on PATH;
#                             npm install @bufbuild/buf puts one in node_modules/.bin)
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file

endpoint="${DICOMSTORE_GRPC_ENDPOINT:-127.0.0.1:50051}"
location="projects/${DICOMSTORE_PROJECT:-demo}/locations/${DICOMSTORE_LOCATION:-local}"
buf="${DICOMSTORE_BUF:-buf}"

DATASETS=google.cloud.healthcare.v1.dataset.DatasetService
DICOM=google.cloud.healthcare.v1.dicom.DicomService
OPERATIONS=google.longrunning.Operations

if ! command -v "$buf" >/dev/null 2>&1; then
    echo "error: buf not found ('$buf'): install it (npm install @bufbuild/buf) and" \
        "put it on PATH, or set DICOMSTORE_BUF" >&2
    exit 2
fi

# buf_curl ARGS...: buf curl speaking gRPC over plaintext HTTP/2 (h2c), which is
# what dicomstore's gRPC port serves without TLS. The schema comes from the
# server's reflection service (grpc.reflection.v1, else v1alpha).
buf_curl() {
    "$buf" curl --protocol grpc --http2-prior-knowledge --timeout 30s "$@"
}

# rpc [--allow CODE] SERVICE/METHOD JSON: call one method; its answer (JSON,
# one field per line, default values included) goes to stdout. On failure,
# print one line "error: METHOD: code: message" and return buf's exit code,
# which is the gRPC status code shifted left by 3 (NOT_FOUND = 5 -> 40).
# With --allow CODE (e.g. already_exists), that code returns 0 and prints nothing.
rpc() {
    local allow="" errors status=0
    if [ "$1" = --allow ]; then
        allow="$2"
        shift 2
    fi
    errors="$(mktemp)"
    buf_curl --emit-defaults --data "$2" "http://$endpoint/$1" 2>"$errors" || status=$?
    if [ "$status" -ne 0 ]; then
        # buf prints a failed RPC as {"code": "not_found", "message": "..."} on
        # stderr; anything else (no connection, bad flags) as text.
        local code message
        code="$(json_field code <"$errors")"
        message="$(json_field message <"$errors")"
        if [ -n "$allow" ] && [ "$code" = "$allow" ]; then
            rm -f "$errors"
            return 0
        fi
        if [ -n "$code" ]; then
            echo "error: ${1##*.}: $code: $message" >&2
        else
            echo "error: ${1##*.}: $(tr '\n' ' ' <"$errors")" >&2
        fi
    fi
    rm -f "$errors"
    return "$status"
}

# json_field KEY < JSON: the first value of "KEY" in buf's indented JSON, whose
# fields are one per line; a string's quotes are removed ("5" -> 5). Enough for
# these examples without needing jq; with jq, use it.
json_field() {
    sed -n "/^ *\"$1\": */{
        s///
        s/,\$//
        s/^\"//
        s/\"\$//
        p
        q
    }"
}
