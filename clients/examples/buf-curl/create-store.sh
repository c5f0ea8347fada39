#!/usr/bin/env bash
# Create a dataset (or reuse it) and a DICOM store in it, then list the
# dataset's stores.
#
#   ./create-store.sh DATASET_ID STORE_ID
set -euo pipefail
. "$(dirname "$0")/common.sh"

if [ "$#" -ne 2 ]; then
    echo "usage: $0 DATASET_ID STORE_ID" >&2
    exit 2
fi
dataset="$location/datasets/$1"

# CreateDataset answers a google.longrunning.Operation whose `response` is the
# Dataset (an Any: buf curl fetches the type its "@type" names by reflection and
# prints the Dataset's fields next to it). dicomstore finishes it at once;
# Google may not.
operation="$(rpc --allow already_exists "$DATASETS/CreateDataset" \
    "{\"parent\": \"$location\", \"datasetId\": \"$1\"}")"
if [ -z "$operation" ]; then
    echo "dataset $dataset: already exists"
else
    echo "dataset $dataset: created (operation $(json_field name <<<"$operation"))"
fi

# Field names are the JSON names of the protos (lowerCamelCase), as in Google's
# REST API.
store="$(rpc "$DICOM/CreateDicomStore" \
    "{\"parent\": \"$dataset\", \"dicomStoreId\": \"$2\",
      \"dicomStore\": {\"labels\": {\"example\": \"buf-curl\"}}}")"
echo "dicom store $(json_field name <<<"$store"): created"

echo "dicom stores in $dataset:"
rpc "$DICOM/ListDicomStores" "{\"parent\": \"$dataset\"}" |
    sed -n 's/^ *"name": "\(.*\)",\{0,1\}$/  \1/p'
