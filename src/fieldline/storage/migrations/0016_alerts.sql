-- Alerts and notifications (SPEC §6): rules, their per-device state, alerts, silences,
-- notification channels and the durable outbox that delivers to them.
--
-- Documents (a rule's condition, a channel's config, a notification's body) are `json`,
-- not `jsonb`, for the reason 0015 gives: jsonb rewrites numbers.

CREATE TABLE alert_rules (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                   text NOT NULL,
    severity               text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    -- Which devices it watches: one device, a group (by name), a device type, or all.
    scope_kind             text NOT NULL CHECK (scope_kind IN ('device', 'group', 'device_type', 'fleet')),
    scope_value            text NOT NULL DEFAULT '',
    kind                   text NOT NULL CHECK (kind IN ('threshold', 'offline', 'no_data')),
    metric                 text,  -- threshold and no_data
    condition              json NOT NULL,  -- the whole condition as the API took it
    channels               bigint[] NOT NULL DEFAULT '{}',
    repeat_seconds         integer NOT NULL DEFAULT 0 CHECK (repeat_seconds >= 0),
    escalate_after_seconds integer NOT NULL DEFAULT 0 CHECK (escalate_after_seconds >= 0),
    escalate_channels      bigint[] NOT NULL DEFAULT '{}',
    enabled                boolean NOT NULL DEFAULT true,
    -- Bumped whenever scope or condition change: state kept for an older revision is void.
    revision               integer NOT NULL DEFAULT 1,
    created_by             text NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
-- Ingest asks, per batch, which metrics any enabled threshold rule watches.
CREATE INDEX alert_rules_watched_idx ON alert_rules (metric) WHERE enabled AND kind = 'threshold';

-- Readings of watched metrics, written by ingest in the transaction that stores them and
-- consumed (deleted) by the evaluator in the transaction that applies them: a committed
-- stream, so several ingest processes and restarts of either side lose or repeat nothing.
CREATE TABLE alert_inbox (
    device_id text NOT NULL,
    metric    text NOT NULL,
    time      timestamptz NOT NULL,
    value     double precision NOT NULL
);

-- Where each (rule, device) stands between alerts: the duration and hysteresis timers.
CREATE TABLE alert_state (
    rule_id    bigint NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    device_id  text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    revision   integer NOT NULL,
    phase      text NOT NULL CHECK (phase IN ('ok', 'pending', 'firing', 'clearing')),
    since      timestamptz NOT NULL,        -- when the current phase began (reading time)
    last_time  timestamptz NOT NULL,        -- the newest reading applied
    last_value double precision,
    PRIMARY KEY (rule_id, device_id)
);

CREATE TABLE alerts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL DEFAULT 'rule' CHECK (kind IN ('rule', 'channel')),
    rule_id          bigint REFERENCES alert_rules (id) ON DELETE SET NULL,
    rule_name        text NOT NULL,  -- kept when the rule is deleted
    channel_id       bigint,         -- kind 'channel': the channel that keeps failing
    severity         text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    device_id        text,
    metric           text,
    state            text NOT NULL DEFAULT 'firing'
                     CHECK (state IN ('firing', 'acknowledged', 'resolved')),
    started_at       timestamptz NOT NULL,  -- the reading (or timer) time it opened at
    started_value    double precision,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    ack_note         text,
    resolved_at      timestamptz,
    resolved_value   double precision,
    resolved_reason  text,
    escalated_at     timestamptz,
    last_notified_at timestamptz,
    transitions      integer NOT NULL DEFAULT 0,  -- numbers idempotency keys
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- One alert per (rule, device) while active, never duplicated; one per failing channel.
CREATE UNIQUE INDEX alerts_active_rule_idx ON alerts (rule_id, coalesce(device_id, ''))
    WHERE state <> 'resolved' AND kind = 'rule';
CREATE UNIQUE INDEX alerts_active_channel_idx ON alerts (channel_id)
    WHERE state <> 'resolved' AND kind = 'channel';
CREATE INDEX alerts_recent_idx ON alerts (id DESC);
CREATE INDEX alerts_device_idx ON alerts (device_id, id DESC);
CREATE INDEX alerts_open_idx ON alerts (state) WHERE state <> 'resolved';

CREATE TABLE silences (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  text,
    group_name text,
    rule_id    bigint REFERENCES alert_rules (id) ON DELETE CASCADE,
    starts_at  timestamptz NOT NULL DEFAULT now(),
    ends_at    timestamptz NOT NULL,
    reason     text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(device_id, group_name, rule_id) = 1),
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_active_idx ON silences (ends_at);

CREATE TABLE notification_channels (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    type                 text NOT NULL,
    config               json NOT NULL,  -- secrets included: never answered by the API
    enabled              boolean NOT NULL DEFAULT true,
    failing_since        timestamptz,
    last_error           text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The outbox: one row per (alert transition, channel), written in the transaction that
-- made the transition, delivered by the worker in order per channel.
CREATE TABLE notifications (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        bigint REFERENCES alerts (id) ON DELETE CASCADE,
    channel_id      bigint NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    event           text NOT NULL
                    CHECK (event IN ('firing', 'repeat', 'escalation', 'acknowledged', 'resolved')),
    idempotency_key text NOT NULL,
    body            json NOT NULL,  -- the webhook body of SPEC §6; other channels render it
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed', 'suppressed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (idempotency_key, channel_id)
);
CREATE INDEX notifications_pending_idx ON notifications (channel_id, id) WHERE status = 'pending';
CREATE INDEX notifications_alert_idx ON notifications (alert_id, id);

CREATE TABLE notification_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id bigint NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    ok              boolean NOT NULL,
    status_code     integer,
    error           text,
    duration_ms     double precision NOT NULL
);
CREATE INDEX notification_attempts_idx ON notification_attempts (notification_id, id);
