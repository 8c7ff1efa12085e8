-- Tokens end with the access they carried, and failed credentials are limited (issue 12).

-- Every access and refresh token names the version it was issued under; a password or
-- role change, or "sign out everywhere", raises it and so ends them all at once.
ALTER TABLE users ADD COLUMN token_version integer NOT NULL DEFAULT 0;

-- Sessions (one login: a refresh token and the access tokens it renews) ended by a
-- sign-out, kept until their refresh token would have expired anyway.
CREATE TABLE revoked_sessions (
    session_id text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_sessions_expiry_idx ON revoked_sessions (expires_at);

-- Recent failed credentials per account, shared by every API process. A row exists
-- only while an account has failures to remember; a success deletes it, and rows past
-- expires_at mean nothing and are deleted a few at a time by later failures.
CREATE TABLE auth_failures (
    kind           text NOT NULL CHECK (kind IN ('user', 'device', 'api_key')),
    account        text NOT NULL,
    failures       integer NOT NULL,
    window_started timestamptz NOT NULL,
    lockouts       integer NOT NULL,
    locked_until   timestamptz,
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (kind, account)
);
CREATE INDEX auth_failures_expiry_idx ON auth_failures (expires_at);
