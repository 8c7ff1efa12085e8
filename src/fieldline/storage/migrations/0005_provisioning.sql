-- Zero-touch provisioning: keys devices sign their registration with, the signatures
-- already used (replay protection), and operators' permissions to provision a device again.

CREATE TABLE provisioning_keys (
    key_id        text PRIMARY KEY,                  -- pk_<random>
    name          text NOT NULL,
    -- Scope: devices provisioned with the key join this group / get this type.
    group_id      bigint REFERENCES groups (id) ON DELETE RESTRICT,
    device_type   text,
    -- AES-GCM nonce || ciphertext of the secret, keyed from the server's secret key
    -- (fieldline.security.provisioning.SecretBox): HMAC needs the secret itself.
    sealed_secret bytea NOT NULL,
    expires_at    timestamptz,
    max_uses      integer CHECK (max_uses > 0),
    uses          integer NOT NULL DEFAULT 0,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

-- A signature is accepted once. `signed_at` is the request's own timestamp: the worker
-- forgets a signature once that is far enough past to make the request stale anyway.
CREATE TABLE provisioning_signatures (
    signature text PRIMARY KEY,                      -- lowercase hex HMAC-SHA256
    key_id    text NOT NULL,
    signed_at timestamptz NOT NULL,
    seen_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provisioning_signatures_signed_idx ON provisioning_signatures (signed_at);

-- An operator allowed this existing device to provision itself again (once, until expires_at).
CREATE TABLE reprovision_allowances (
    device_id  text PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    allowed_by text NOT NULL,
    allowed_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
