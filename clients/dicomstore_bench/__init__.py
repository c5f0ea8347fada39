"""dicomstore-bench: load generators for a dicomstore server."""
