-- What EMQX 5's PostgreSQL authenticator and authorizer query (docs/brokers.md, "EMQX 5";
-- the exact queries are fieldline.storage.broker_auth). Views over the registry itself:
-- registering, disabling, rotating or deleting a device counts at EMQX's next check, and
-- EMQX's role needs SELECT on these two views only, never on device_credentials.

-- One row per enabled device. A stored secret is `pbkdf2_sha512$<iterations>$<salt>$<digest>`
-- (standard base64, padded). EMQX's pbkdf2 check derives a key from the password and the
-- salt column's bytes, and compares its lowercase hex with password_hash: so the digest is
-- re-encoded as hex, and the salt stays raw bytes (a bytea reaches EMQX as those bytes).
-- The pattern keeps a malformed secret out of the view instead of failing the query.
CREATE VIEW emqx_mqtt_user AS
SELECT
    d.device_id AS username,
    encode(decode(split_part(c.secret_hash, '$', 4), 'base64'), 'hex') AS password_hash,
    decode(split_part(c.secret_hash, '$', 3), 'base64') AS salt,
    false AS is_superuser,
    -- EMQX takes the iteration count from its own configuration; a row whose count differs
    -- (FIELDLINE_DEVICE_HASH_ITERATIONS changed since) fails until its secret is rotated.
    split_part(c.secret_hash, '$', 2)::integer AS iterations
FROM devices d
JOIN device_credentials c USING (device_id)
WHERE d.enabled
  AND c.secret_hash ~ ('^pbkdf2_sha512\$[0-9]{1,9}'
      '\$([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?'
      '\$([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$');

-- One `allow` row per (enabled device, action, topic) the device contract grants, the same
-- as fieldline.domain.topics.TopicScheme: publish to its own uplink topics, subscribe to its
-- own downlink topics. No wildcards, so EMQX's matching is exact; everything else is left
-- to `no_match = deny`. The first topic level is FIELDLINE_TOPIC_PREFIX, which the database
-- cannot see: it is read from the setting `fieldline.topic_prefix` (ALTER ROLE <emqx role>
-- SET fieldline.topic_prefix = '...'), `devices` when unset.
CREATE VIEW emqx_acl AS
SELECT
    d.device_id AS username,
    'allow'::text AS permission,
    r.action,
    coalesce(nullif(current_setting('fieldline.topic_prefix', true), ''), 'devices')
        || '/' || d.device_id || '/' || r.kind AS topic
FROM devices d
CROSS JOIN (
    VALUES
        ('publish', 'telemetry'),
        ('publish', 'status'),
        ('publish', 'heartbeat'),
        ('publish', 'commands/result'),
        ('subscribe', 'config'),
        ('subscribe', 'commands'),
        ('subscribe', 'ota')
) AS r (action, kind)
WHERE d.enabled;
