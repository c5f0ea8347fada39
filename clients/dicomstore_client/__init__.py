"""A Python client for dicomstore and Google's Cloud Healthcare API v1 DICOM stores."""
