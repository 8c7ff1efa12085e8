-- fieldline's own health for Grafana and psql (issue 18): the heartbeats, the failing
-- health checks and the system alerts of migration 0024, as `reporting` views the
-- read-only role may read (0021 says why views and not grants on the tables).

-- A row per process start heard from in the last day (older ones are forgotten): what it
-- runs and the few vitals a panel shows, not the whole vitals document.
CREATE VIEW reporting.processes AS
SELECT p.role, p.name, p.parts, p.host, p.version, p.started_at, p.seen_at, p.stopped_at,
       (p.vitals ->> 'rss_bytes')::double precision AS rss_bytes,
       (p.vitals ->> 'cpu_seconds')::double precision AS cpu_seconds,
       (p.vitals -> 'ingest' ->> 'queue_depth')::double precision AS queue_depth,
       (p.vitals -> 'ingest' ->> 'broker_connected')::double precision = 1
           AS broker_connected,
       (p.vitals -> 'ingest' ->> 'write_stalled_seconds')::double precision
           AS write_stalled_seconds,
       (p.vitals -> 'rates' ->> 'latency_p99_5m')::double precision AS latency_p99_seconds,
       (p.vitals -> 'rates' -> '5m' ->> 'received')::double precision AS received_5m,
       (p.vitals -> 'rates' -> '5m' ->> 'rejected')::double precision AS rejected_5m,
       (p.vitals -> 'rates' -> '5m' ->> 'requests')::double precision AS requests_5m,
       (p.vitals -> 'rates' -> '5m' ->> 'errors_5xx')::double precision AS errors_5xx_5m
FROM processes p;

-- The checks failing now; `alert_state` is null until a check has failed for its duration.
CREATE VIEW reporting.health_checks AS
SELECT h.key, split_part(h.key, ':', 1) AS name,
       nullif(substr(h.key, strpos(h.key, ':') + 1), h.key) AS subject,
       h.severity, h.summary, h.failing_since, h.judged_at,
       a.id AS alert_id, a.state AS alert_state
FROM health_checks h
LEFT JOIN alerts a ON a.kind = 'system' AND a.system_check = h.key AND a.state <> 'resolved';

-- fieldline's alerts about itself: its system alerts and its failing notification
-- channels', open and resolved (the device rules' alerts are not for an ops dashboard).
CREATE VIEW reporting.system_alerts AS
SELECT a.id, a.kind, a.rule_name AS name, a.system_check AS health_check, a.severity,
       a.state, a.started_at, a.acknowledged_at, a.resolved_at, a.resolved_reason
FROM alerts a
WHERE a.kind IN ('system', 'channel');

-- Readings and points stored per 10-second bucket, every ingest writer summed (the worker
-- keeps a day of them).
CREATE VIEW reporting.ingest_activity AS
SELECT bucket AS time, sum(readings)::bigint AS readings, sum(points)::bigint AS points
FROM ingest_activity
GROUP BY bucket;

-- A database whose reader was granted `ALL TABLES IN SCHEMA reporting` before these views
-- existed (an external server's administrator does that once, docs/data.md) would not
-- see them: grant them here, where the role exists. `fieldline up` grants again anyway.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'fieldline_reader') THEN
        GRANT SELECT ON reporting.processes, reporting.health_checks, reporting.system_alerts,
            reporting.ingest_activity TO fieldline_reader;
    END IF;
END
$$;
