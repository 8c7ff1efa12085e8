-- Hourly rollups of every series: long charts read one row per hour instead of every
-- point. Ingest adds each batch's points to their hours in the same transaction that
-- records the batch in the message ledger, so a rollup counts every stored point
-- exactly once, late and redelivered ones included. Hours are aligned to the epoch
-- (UTC), like the API's buckets.
CREATE TABLE telemetry_hourly (
    device_id text NOT NULL,
    metric    text NOT NULL,
    hour      timestamptz NOT NULL,
    count     bigint NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    PRIMARY KEY (device_id, metric, hour)
);

INSERT INTO telemetry_hourly (device_id, metric, hour, count, sum, min, max)
SELECT device_id, metric, date_bin('1 hour', time, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
       count(*), sum(value), min(value), max(value)
FROM telemetry
GROUP BY 1, 2, 3;
