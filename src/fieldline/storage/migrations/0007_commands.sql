-- Commands to devices: pending → sent → succeeded | failed, or expired past expires_at.
CREATE TABLE commands (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- creation order
    command_id   uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    device_id    text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    name         text NOT NULL,
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'sent', 'succeeded', 'failed', 'expired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    sent_at      timestamptz,
    completed_at timestamptz,
    expires_at   timestamptz NOT NULL,
    result       jsonb
);
-- A device's commands, newest first.
CREATE INDEX commands_device_idx ON commands (device_id, id DESC);
-- The dispatcher, every second: open commands only, so it costs nothing when none are.
CREATE INDEX commands_pending_idx ON commands (device_id, id) WHERE status = 'pending';
CREATE INDEX commands_open_expiry_idx ON commands (expires_at) WHERE status IN ('pending', 'sent');
