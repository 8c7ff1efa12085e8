-- fieldline schema, version 1: registry, users, telemetry, ledger, rejected store.

CREATE TABLE groups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    device_id        text PRIMARY KEY,
    name             text NOT NULL DEFAULT '',
    device_type      text NOT NULL DEFAULT '',
    group_id         bigint REFERENCES groups (id) ON DELETE RESTRICT,
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled          boolean NOT NULL DEFAULT true,
    -- what the device last said about itself (status topic, last will, heartbeat)
    status           text NOT NULL DEFAULT 'never_seen'
                     CHECK (status IN ('online', 'offline', 'never_seen')),
    last_seen        timestamptz,
    firmware_version text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_group_idx ON devices (group_id);

CREATE TABLE device_credentials (
    device_id   text PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    secret_hash text NOT NULL,
    rotated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE device_status_events (
    device_id text NOT NULL,
    time      timestamptz NOT NULL,
    status    text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX device_status_events_idx ON device_status_events (device_id, time DESC);

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- (device, message_id) stored once, however often it arrives.
CREATE TABLE message_ledger (
    device_id   text NOT NULL,
    message_id  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, message_id)
);

-- Points, partitioned by day; partitions are created by the writer on demand
-- and dropped whole by retention, never deleted row by row.
CREATE TABLE telemetry (
    time      timestamptz NOT NULL,
    device_id text NOT NULL,
    metric    text NOT NULL,
    value     double precision NOT NULL
) PARTITION BY RANGE (time);
CREATE INDEX telemetry_series_idx ON telemetry (device_id, metric, time);

CREATE TABLE telemetry_latest (
    device_id text NOT NULL,
    metric    text NOT NULL,
    time      timestamptz NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (device_id, metric)
);

CREATE TABLE device_attributes (
    device_id text NOT NULL,
    key       text NOT NULL,
    value     text NOT NULL,
    time      timestamptz NOT NULL,
    PRIMARY KEY (device_id, key)
);

CREATE TABLE rejected_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    device_id   text,
    topic       text NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    payload     bytea NOT NULL
);
CREATE INDEX rejected_messages_time_idx ON rejected_messages (received_at DESC);
CREATE INDEX rejected_messages_device_idx ON rejected_messages (device_id, received_at DESC);
