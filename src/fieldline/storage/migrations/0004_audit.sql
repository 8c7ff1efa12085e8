-- Who did what to which resource: written in the same transaction as the change.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time        timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,   -- "user:<name>", "device:<id>", "provisioning-key:<id>", "system"
    action      text NOT NULL,   -- e.g. device.create, device.disable, command.send
    target_type text NOT NULL,   -- device, user, group, api_key, provisioning_key, config, command
    target_id   text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_target_idx ON audit_log (target_type, target_id, id DESC);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id DESC);
