-- Signed firmware images and staged rollouts (issue 17, SPEC §5, docs/ota.md).

CREATE TABLE firmware (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_model  text NOT NULL,
    version       text NOT NULL,
    sha256        text NOT NULL,
    size_bytes    bigint NOT NULL CHECK (size_bytes >= 0),
    signature     text NOT NULL,  -- base64 Ed25519 over the manifest (domain/firmware.py)
    key_id        text NOT NULL,
    release_notes text NOT NULL DEFAULT '',
    uploaded_at   timestamptz NOT NULL DEFAULT now(),
    uploaded_by   text,
    UNIQUE (device_model, version)
);

-- The image itself, in pieces: uploads and downloads hold one piece at a time, a Range
-- request reads only the pieces it covers, every API process serves the same bytes, and
-- a backup (pg_dump) holds the images with the rollouts that refer to them. Firmware is
-- compressed already: EXTERNAL keeps PostgreSQL from trying again.
CREATE TABLE firmware_chunks (
    firmware_id bigint NOT NULL REFERENCES firmware (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    data        bytea NOT NULL,
    PRIMARY KEY (firmware_id, seq)
);
ALTER TABLE firmware_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE rollouts (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    firmware_id            bigint NOT NULL REFERENCES firmware (id) ON DELETE RESTRICT,
    target_groups          bigint[] NOT NULL DEFAULT '{}',
    target_devices         text[] NOT NULL DEFAULT '{}',
    -- [{"devices": n} | {"percentage": p}, each but the first with "after_seconds"]
    stages                 jsonb NOT NULL,
    stage                  integer NOT NULL DEFAULT 0,
    stage_started_at       timestamptz NOT NULL DEFAULT now(),
    manual_percentage      double precision,  -- raised by hand: at least this share
    max_per_minute         integer NOT NULL CHECK (max_per_minute > 0),
    device_timeout_seconds integer NOT NULL CHECK (device_timeout_seconds > 0),
    settle_seconds         integer NOT NULL CHECK (settle_seconds >= 0),
    abort_min_finished     integer NOT NULL CHECK (abort_min_finished >= 1),
    abort_failure_percent  double precision NOT NULL
                           CHECK (abort_failure_percent >= 0 AND abort_failure_percent <= 100),
    allow_downgrade        boolean NOT NULL DEFAULT false,
    required               boolean NOT NULL DEFAULT false,  -- told to devices as `required`
    state                  text NOT NULL DEFAULT 'running'
                           CHECK (state IN ('running', 'paused', 'completed', 'cancelled')),
    pause_reason           text,
    paused_by              text,  -- the user who paused it; NULL when it paused itself
    paused_at              timestamptz,
    counting_since         timestamptz,  -- after a resume the abort criteria count from here
    tokens                 double precision NOT NULL DEFAULT 1,  -- the pace's bucket
    tokens_at              timestamptz NOT NULL DEFAULT now(),
    created_by             text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    finished_at            timestamptz
);
CREATE INDEX rollouts_active_idx ON rollouts (id) WHERE state IN ('running', 'paused');

CREATE TABLE rollout_devices (
    rollout_id   bigint NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    device_id    text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    place        integer NOT NULL,
    state        text NOT NULL CHECK (state IN (
                     'pending', 'notified', 'downloading', 'downloaded', 'installing',
                     'installed', 'verifying', 'succeeded', 'failed', 'rolled_back',
                     'timed_out', 'skipped', 'cancelled')),
    from_version text,
    progress     integer,
    error        text,
    announced    boolean NOT NULL DEFAULT false,  -- a retained message on its ota topic
    entered_at   timestamptz NOT NULL DEFAULT now(),
    notified_at  timestamptz,
    reported_at  timestamptz,  -- its last progress report
    installed_at timestamptz,  -- it said installing or installed: a reboot comes next
    came_back_at timestamptz,  -- its status on the new version: settling from here
    finished_at  timestamptz,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX rollout_devices_device_idx ON rollout_devices (device_id, entered_at DESC);
CREATE INDEX rollout_devices_open_idx ON rollout_devices (rollout_id, state)
    WHERE finished_at IS NULL OR announced;

-- Devices report firmware progress on devices/{id}/ota/progress (SPEC §2): EMQX's ACL view
-- offers it as it offers the other uplinks. Otherwise the view of migration 0013; CREATE
-- OR REPLACE keeps EMQX's grants on it.
CREATE OR REPLACE VIEW emqx_acl AS
SELECT
    d.device_id AS username,
    'allow'::text AS permission,
    r.action,
    coalesce(nullif(current_setting('fieldline.topic_prefix', true), ''), 'devices')
        || '/' || d.device_id || '/' || r.kind AS topic,
    d.device_id AS clientid
FROM devices d
CROSS JOIN (
    VALUES
        ('publish', 'telemetry'),
        ('publish', 'status'),
        ('publish', 'heartbeat'),
        ('publish', 'commands/result'),
        ('publish', 'ota/progress'),
        ('subscribe', 'config'),
        ('subscribe', 'commands'),
        ('subscribe', 'ota')
) AS r (action, kind)
WHERE d.enabled
  AND lower(d.device_id) NOT LIKE 'fieldline-%';
