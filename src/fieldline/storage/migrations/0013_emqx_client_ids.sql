-- EMQX's views also give each device the one MQTT client id it may use: its device id
-- (SPEC §3). EMQX's queries (fieldline.storage.broker_auth) match it with ${clientid}, so a
-- device presenting another client id, which would take over that client's session, finds
-- no row and is refused. Ids starting with `fieldline-` are fieldline's own client ids
-- (ingest, publishers): no device row ever offers one. The views are otherwise those of
-- migration 0002; CREATE OR REPLACE keeps EMQX's grants on them.
CREATE OR REPLACE VIEW emqx_mqtt_user AS
SELECT
    d.device_id AS username,
    encode(decode(split_part(c.secret_hash, '$', 4), 'base64'), 'hex') AS password_hash,
    decode(split_part(c.secret_hash, '$', 3), 'base64') AS salt,
    false AS is_superuser,
    split_part(c.secret_hash, '$', 2)::integer AS iterations,
    d.device_id AS clientid
FROM devices d
JOIN device_credentials c USING (device_id)
WHERE d.enabled
  AND lower(d.device_id) NOT LIKE 'fieldline-%'
  AND c.secret_hash ~ ('^pbkdf2_sha512\$[0-9]{1,9}'
      '\$([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?'
      '\$([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$');

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
        ('subscribe', 'config'),
        ('subscribe', 'commands'),
        ('subscribe', 'ota')
) AS r (action, kind)
WHERE d.enabled
  AND lower(d.device_id) NOT LIKE 'fieldline-%';
