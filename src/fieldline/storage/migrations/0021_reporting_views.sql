-- SQL and Grafana users (issue 16): views in a schema of their own that join points with
-- what people call devices and metrics, for a read-only role (storage/reporting.py) that
-- is granted these views and nothing else. A view reads its tables with its owner's
-- rights, so the role needs none on the tables themselves.
CREATE SCHEMA reporting;

-- The metadata a device's metric uses: its type's entry, else the entry for every type.
CREATE VIEW reporting.device_metrics AS
SELECT DISTINCT ON (d.device_id, m.metric)
       d.device_id, m.metric, m.display_name, m.unit, m.decimals, m.kind, m.labels
FROM devices d
JOIN metric_metadata m ON m.device_type IN (d.device_type, '*')
ORDER BY d.device_id, m.metric, m.device_type = '*';

CREATE VIEW reporting.points AS
SELECT t.time, t.device_id, d.name AS device_name, d.device_type, g.name AS group_name,
       t.metric, coalesce(nullif(m.display_name, ''), t.metric) AS metric_name,
       coalesce(m.unit, '') AS unit, t.value
FROM telemetry t
JOIN devices d ON d.device_id = t.device_id
LEFT JOIN groups g ON g.id = d.group_id
LEFT JOIN reporting.device_metrics m ON m.device_id = t.device_id AND m.metric = t.metric;

CREATE VIEW reporting.points_hourly AS
SELECT h.hour AS time, h.device_id, d.name AS device_name, d.device_type,
       g.name AS group_name, h.metric,
       coalesce(nullif(m.display_name, ''), h.metric) AS metric_name,
       coalesce(m.unit, '') AS unit, h.count, h.sum / h.count AS avg, h.min, h.max
FROM telemetry_hourly h
JOIN devices d ON d.device_id = h.device_id
LEFT JOIN groups g ON g.id = d.group_id
LEFT JOIN reporting.device_metrics m ON m.device_id = h.device_id AND m.metric = h.metric;

CREATE VIEW reporting.points_daily AS
SELECT dd.day AS time, dd.device_id, d.name AS device_name, d.device_type,
       g.name AS group_name, dd.metric,
       coalesce(nullif(m.display_name, ''), dd.metric) AS metric_name,
       coalesce(m.unit, '') AS unit, dd.count, dd.sum / dd.count AS avg, dd.min, dd.max
FROM telemetry_daily dd
JOIN devices d ON d.device_id = dd.device_id
LEFT JOIN groups g ON g.id = d.group_id
LEFT JOIN reporting.device_metrics m ON m.device_id = dd.device_id AND m.metric = dd.metric;

CREATE VIEW reporting.latest AS
SELECT l.time, l.device_id, d.name AS device_name, d.device_type, g.name AS group_name,
       l.metric, coalesce(nullif(m.display_name, ''), l.metric) AS metric_name,
       coalesce(m.unit, '') AS unit, l.value
FROM telemetry_latest l
JOIN devices d ON d.device_id = l.device_id
LEFT JOIN groups g ON g.id = d.group_id
LEFT JOIN reporting.device_metrics m ON m.device_id = l.device_id AND m.metric = l.metric;

CREATE VIEW reporting.devices AS
SELECT d.device_id, d.name, d.device_type, g.name AS group_name, d.enabled, d.last_seen,
       d.created_at
FROM devices d
LEFT JOIN groups g ON g.id = d.group_id;
