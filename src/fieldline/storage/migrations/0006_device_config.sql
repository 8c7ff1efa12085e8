-- Desired configuration (a device twin): an object per group and per device; a device's
-- effective configuration is the group's with the device's merged over it
-- (fieldline.domain.config), versioned per device, published retained to the device.

-- What the device says it applied (`config_version` in its status message).
ALTER TABLE devices
    ADD COLUMN reported_config_version bigint,
    ADD COLUMN config_reported_at      timestamptz;

CREATE TABLE group_configs (
    group_id   bigint PRIMARY KEY REFERENCES groups (id) ON DELETE CASCADE,
    config     jsonb NOT NULL,
    version    bigint NOT NULL,                     -- grows with each change of the group's object
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE device_configs (
    device_id         text PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    config            jsonb NOT NULL DEFAULT '{}'::jsonb,  -- the device's own object
    effective         jsonb NOT NULL DEFAULT '{}'::jsonb,  -- what `version` is
    version           bigint NOT NULL DEFAULT 0,           -- only grows; 0: never configured
    -- The group (and its object's version) `effective` was merged from: when the device
    -- changes group, or missed a change of its group, these differ and the worker catches up.
    group_id          bigint,
    group_version     bigint,
    published_version bigint,                              -- newest the broker acknowledged
    published_at      timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- The worker's "not yet published" round costs nothing when everything is delivered.
CREATE INDEX device_configs_unpublished_idx ON device_configs (device_id)
    WHERE version > coalesce(published_version, 0);

-- Every change: who set which object when. `version` is the group's new version for a
-- group change, the device's for a device change (NULL when its effective configuration
-- stayed the same), NULL for a membership change.
CREATE TABLE config_changes (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time              timestamptz NOT NULL DEFAULT now(),
    actor             text NOT NULL,
    scope             text NOT NULL CHECK (scope IN ('group', 'device', 'membership')),
    target            text,             -- group name, device id, or the group joined (NULL: none)
    group_id          bigint REFERENCES groups (id) ON DELETE SET NULL,  -- group changes
    config            jsonb,
    version           bigint,
    devices_versioned integer NOT NULL DEFAULT 0
);
CREATE INDEX config_changes_group_idx ON config_changes (group_id, id DESC)
    WHERE scope = 'group';

-- Which changes reached which device, and the version each gave it.
CREATE TABLE device_config_history (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    change_id bigint NOT NULL REFERENCES config_changes (id) ON DELETE CASCADE,
    version   bigint                    -- NULL: the change left the effective configuration as it was
);
CREATE INDEX device_config_history_device_idx ON device_config_history (device_id, id DESC);
CREATE INDEX device_config_history_change_idx ON device_config_history (change_id);
