"""A Python client for dicomstore and Google's Cloud Healthcare API v1 DICOM stores.

- `management.ManagementClient`, `management_async.AsyncManagementClient`: datasets, DICOM
  stores, metrics, import, export and operations over gRPC, with `wait()` for operations;
- `dicomweb`: DICOMweb over HTTP (store, search, retrieve, delete);
- `connection.Connection`: endpoints and token; `names.Scope`: short ids to full names;
- `errors.ClientError`: every failure, with an exit code by kind;
- `cli`: the `dicomstore-client` command.
"""
