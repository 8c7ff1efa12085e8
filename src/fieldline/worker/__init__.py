"""The worker: housekeeping that runs beside ingest and the API."""
