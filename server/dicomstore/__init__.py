"""dicomstore: a self-hosted Google Cloud Healthcare API v1 DICOM store."""

__version__ = "0.1.0"
