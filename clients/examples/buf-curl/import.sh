#!/usr/bin/env bash
# Import DICOM files from Cloud Storage into a store, and follow the
# long-running operation until it ends, printing its progress counters.
#
#   ./import.sh DATASET_ID STORE_ID 'gs://BUCKET/PATH/**.dcm'
#
# Against dicomstore, gs://BUCKET/OBJECT is the file DATA_DIR/gcs/BUCKET/OBJECT
# unless the server was given --gcs-endpoint. DICOMSTORE_IMPORT_TIMEOUT is how
# long to wait, in seconds (default 600).
#
# Exit codes: 0 imported; 2 usage; 3 the operation ended with an error (some
# objects failed, or the source matched nothing); 4 still running at the
# timeout; any other: an RPC failed (buf's code: the gRPC status << 3).
set -euo pipefail
. "$(dirname "$0")/common.sh"

if [ "$#" -ne 3 ]; then
    echo "usage: $0 DATASET_ID STORE_ID gs://BUCKET/PATH" >&2
    exit 2
fi
store="$location/datasets/$1/dicomStores/$2"
timeout="${DICOMSTORE_IMPORT_TIMEOUT:-600}"

operation="$(rpc "$DICOM/ImportDicomData" \
    "{\"name\": \"$store\", \"gcsSource\": {\"uri\": \"$3\"}}")"
name="$(json_field name <<<"$operation")"
echo "import of $3: operation $name"

# The operation's metadata is an Any holding a
# google.cloud.healthcare.v1.OperationMetadata; buf curl fetches that type by
# reflection and prints its fields, counters included (int64: JSON strings).
counters() {
    echo "success=$(json_field success <<<"$1")" \
        "failure=$(json_field failure <<<"$1")" \
        "pending=$(json_field pending <<<"$1")"
}

# Poll GetOperation with backoff: 250 ms, growing by half, at most 5 s.
delay_ms=250
printed=""
start=$SECONDS
while :; do
    finished="$(json_field "done" <<<"$operation")"
    line="$(counters "$operation")"
    if [ "$line" != "$printed" ]; then
        if [ "$finished" = true ]; then state="done"; else state=running; fi
        echo "  $state: $line"
        printed="$line"
    fi
    [ "$finished" = true ] && break
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
        echo "error: $name is still running after ${timeout}s" >&2
        exit 4
    fi
    sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"
    delay_ms=$((delay_ms * 3 / 2))
    [ "$delay_ms" -gt 5000 ] && delay_ms=5000
    operation="$(rpc "$OPERATIONS/GetOperation" "{\"name\": \"$name\"}")"
done

# A finished operation has either "response" or "error" (a google.rpc.Status).
# An import's error details hold ImportDicomDataErrorDetails: sample errors,
# each a resource (the object) and its error.
if [ -n "$(json_field error <<<"$operation")" ]; then
    echo "import failed: $(json_field message <<<"$operation")" >&2
    awk '
        function value(line) { sub(/^[^:]*: *"/, "", line); sub(/",?$/, "", line); return line }
        /^ *"resource": / { resource = value($0) }
        /^ *"message": / && resource != "" { print "  " resource ": " value($0); resource = "" }
    ' <<<"$operation" >&2
    logs="$(json_field logsUrl <<<"$operation")"
    [ -n "$logs" ] && echo "  every failure: $logs" >&2
    exit 3
fi
echo "import done: $line"
