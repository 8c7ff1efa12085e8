-- Retention tiers (SPEC §4): raw points, hourly rollups and daily rollups, each dropped
-- whole partitions at a time when past its age, never row by row.
--
-- Raw points already have a partition per day (0001). The hourly rollups become a
-- partitioned table, a partition per month; the new daily rollups have one per year.
-- Partitions are named <table>_pYYYYMMDD, _pYYYYMM and _pYYYY (storage/partitions.py
-- creates them on demand and reads their ranges back from the names). Rows that
-- ingest updates in place keep room for HOT updates, as 0010 set for the old table.

ALTER TABLE telemetry_hourly RENAME TO telemetry_hourly_unpartitioned;
ALTER TABLE telemetry_hourly_unpartitioned
    RENAME CONSTRAINT telemetry_hourly_pkey TO telemetry_hourly_unpartitioned_pkey;

CREATE TABLE telemetry_hourly (
    device_id text NOT NULL,
    metric    text NOT NULL,
    hour      timestamptz NOT NULL,
    count     bigint NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    PRIMARY KEY (device_id, metric, hour)
) PARTITION BY RANGE (hour);

-- Days are UTC days aligned to the epoch, like the API's buckets.
CREATE TABLE telemetry_daily (
    device_id text NOT NULL,
    metric    text NOT NULL,
    day       timestamptz NOT NULL,
    count     bigint NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    PRIMARY KEY (device_id, metric, day)
) PARTITION BY RANGE (day);

DO $$
DECLARE
    month date;
    year date;
BEGIN
    FOR month IN
        SELECT DISTINCT date_trunc('month', hour AT TIME ZONE 'UTC')::date
        FROM telemetry_hourly_unpartitioned
    LOOP
        EXECUTE format(
            'CREATE TABLE telemetry_hourly_p%s PARTITION OF telemetry_hourly'
            ' FOR VALUES FROM (%L) TO (%L) WITH (fillfactor = 50)',
            to_char(month, 'YYYYMM'),
            month::text || ' 00:00:00+00',
            (month + interval '1 month')::date::text || ' 00:00:00+00'
        );
    END LOOP;
    FOR year IN
        SELECT DISTINCT date_trunc('year', hour AT TIME ZONE 'UTC')::date
        FROM telemetry_hourly_unpartitioned
    LOOP
        EXECUTE format(
            'CREATE TABLE telemetry_daily_p%s PARTITION OF telemetry_daily'
            ' FOR VALUES FROM (%L) TO (%L) WITH (fillfactor = 50)',
            to_char(year, 'YYYY'),
            year::text || ' 00:00:00+00',
            (year + interval '1 year')::date::text || ' 00:00:00+00'
        );
    END LOOP;
END
$$;

INSERT INTO telemetry_hourly SELECT * FROM telemetry_hourly_unpartitioned;

-- The days are summed from the hours, which hold every stored point exactly once.
INSERT INTO telemetry_daily (device_id, metric, day, count, sum, min, max)
SELECT device_id, metric, date_bin('1 day', hour, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
       sum(count), sum(sum), min(min), max(max)
FROM telemetry_hourly_unpartitioned
GROUP BY 1, 2, 3;

DROP TABLE telemetry_hourly_unpartitioned;

-- When retention last ran and what it dropped, per tier, for /metrics and the API.
CREATE TABLE retention_runs (
    tier       text PRIMARY KEY,
    ran_at     timestamptz NOT NULL,
    dropped    text[] NOT NULL,       -- the partitions the last run dropped
    bytes      bigint NOT NULL,       -- their size on disk
    rows       bigint NOT NULL        -- their rows (PostgreSQL's estimate, kept by ANALYZE)
);

-- Storage accounting (storage/accounting.py): the worker's hourly measurement of the
-- database's size, for the growth rate, and of the devices with the most points.
CREATE TABLE storage_snapshots (
    taken_at       timestamptz PRIMARY KEY,
    database_bytes bigint NOT NULL,
    since          date,                -- points per device are counted from this day
    top_devices    json NOT NULL        -- [[device_id, points], ...], most first
);
