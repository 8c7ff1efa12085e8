-- The Parquet archive (SPEC §4, archive/): what was archived where, so that a run
-- writes only what is new or changed, and retention drops raw points only once archived.
--
-- A file is recorded per archive location (`target`, the FIELDLINE_ARCHIVE_URL it went
-- to): pointing the archive elsewhere archives everything again there. `counted` is the
-- rollups' count of points in the hour (or day) in the snapshot the file was written
-- from; late readings raise the rollups' count above it, and the next run writes the
-- file again with them.

CREATE TABLE archive_files (
    target      text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('points', 'daily')),
    start       timestamptz NOT NULL,      -- the hour (points) or the UTC day (daily)
    key         text NOT NULL,             -- the file's key within the archive
    rows        bigint NOT NULL,           -- rows in the file
    counted     bigint NOT NULL,           -- points the rollups counted when it was written
    bytes       bigint NOT NULL,
    sha256      text NOT NULL,
    archived_at timestamptz NOT NULL,
    PRIMARY KEY (target, kind, start)
);

-- One row: when the last archive run finished and what it wrote, for /metrics and the API.
CREATE TABLE archive_runs (
    target     text PRIMARY KEY,
    ran_at     timestamptz NOT NULL,
    files      integer NOT NULL,
    rows       bigint NOT NULL,
    bytes      bigint NOT NULL,
    error      text                       -- the last run's failure, NULL when it succeeded
);

-- Rollups are found by time when the archive compares counts (a day's or an hour's
-- sum): block ranges, nearly free to keep since rows arrive roughly in time order.
CREATE INDEX telemetry_hourly_hour_brin ON telemetry_hourly USING brin (hour);
CREATE INDEX telemetry_daily_day_brin ON telemetry_daily USING brin (day);
