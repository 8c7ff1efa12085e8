-- Rows that ingest updates in place at every batch (latest values, hourly rollups,
-- attributes) keep free room on their pages, so PostgreSQL can update them without
-- touching their indexes (HOT updates) and vacuum has less to clean.
ALTER TABLE telemetry_latest SET (fillfactor = 50);
ALTER TABLE telemetry_hourly SET (fillfactor = 50);
ALTER TABLE device_attributes SET (fillfactor = 50);
