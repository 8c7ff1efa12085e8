-- The series index carries the value: a chart or a raw page of one device reads the
-- index alone (an index-only scan of contiguous entries) instead of one heap page per
-- reading, which ingest scatters among every other device's readings of that moment.
-- (`fieldline bench queries`: a 30-day chart at 10 s read ~23,000 heap pages, 200+ ms.)
CREATE INDEX telemetry_series_value_idx ON telemetry (device_id, metric, time) INCLUDE (value);
DROP INDEX telemetry_series_idx;
