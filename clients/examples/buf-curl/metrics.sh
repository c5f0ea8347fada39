#!/usr/bin/env bash
# Print a DICOM store's metrics: studies, series, instances and bytes stored.
#
#   ./metrics.sh DATASET_ID STORE_ID
set -euo pipefail
. "$(dirname "$0")/common.sh"

if [ "$#" -ne 2 ]; then
    echo "usage: $0 DATASET_ID STORE_ID" >&2
    exit 2
fi
store="$location/datasets/$1/dicomStores/$2"

metrics="$(rpc "$DICOM/GetDicomStoreMetrics" "{\"name\": \"$store\"}")"
printf '%s\n' "$metrics"
# int64 fields are JSON strings ("3"); json_field drops the quotes.
echo "$store: $(json_field studyCount <<<"$metrics") studies," \
    "$(json_field seriesCount <<<"$metrics") series," \
    "$(json_field instanceCount <<<"$metrics") instances," \
    "$(json_field blobStorageSizeBytes <<<"$metrics") bytes"
