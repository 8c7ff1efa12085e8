-- fieldline watching itself (issue 18, docs/monitoring.md "Without Prometheus").

-- Every fieldline process writes its row here every FIELDLINE_HEARTBEAT_SECONDS: what it
-- runs, since when, and its vitals (the numbers its /metrics serves, rates over its own
-- recent past, a worker's jobs). The health checks and the admin health page read them:
-- a process whose row is no longer refreshed is down, whoever else is looking.
CREATE TABLE processes (
    id          text PRIMARY KEY,                -- random, one per start
    role        text NOT NULL,                   -- up, api, ingest, worker
    name        text NOT NULL,                   -- e.g. "ingest 1"
    parts       text[] NOT NULL,                 -- of api, ingest, worker: what it runs
    host        text NOT NULL,
    pid         integer NOT NULL,
    version     text NOT NULL,
    started_at  timestamptz NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now(),  -- the database's clock, not the host's
    stopped_at  timestamptz,                     -- set by a clean stop
    vitals      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX processes_seen_idx ON processes (seen_at);

-- Each health check that fails, and since when: a check opens its system alert once it
-- has failed for its duration (whichever process judges it; the state survives restarts).
CREATE TABLE health_checks (
    key            text PRIMARY KEY,   -- check name, ':' and its subject when it has one
    failing_since  timestamptz NOT NULL,
    severity       text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    summary        text NOT NULL,
    judged_at      timestamptz NOT NULL DEFAULT now()
);

-- System alerts: fieldline's own conditions, told on every enabled channel.
ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check
    CHECK (kind IN ('rule', 'channel', 'system'));
ALTER TABLE alerts ADD COLUMN system_check text;  -- kind 'system': the health check's key
CREATE UNIQUE INDEX alerts_active_system_idx ON alerts (system_check)
    WHERE state <> 'resolved' AND kind = 'system';
