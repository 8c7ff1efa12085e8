-- Backups (SPEC §4): what each backup holds is in its manifest beside it in the store;
-- the database keeps when backups were taken and when one was last restored and
-- checked, for the worker's schedule, the metrics, the API and the dashboard.
--
-- A backup's own row is written once its dump is complete, so a backup holds the rows
-- of the backups before it, never its own.

CREATE TABLE backups (
    id          text NOT NULL,          -- fieldline-YYYYMMDDTHHMMSSZ, the store's folder
    location    text NOT NULL,          -- the store it was written to (a directory, s3://...)
    started_at  timestamptz NOT NULL,   -- the moment the database was dumped at
    finished_at timestamptz NOT NULL,
    bytes       bigint NOT NULL,        -- the dump and the files, as stored
    tables      integer NOT NULL,
    rows        bigint NOT NULL,
    pruned_at   timestamptz,            -- deleted by the keep-daily/keep-weekly rule
    PRIMARY KEY (location, id)
);

CREATE INDEX backups_finished_at ON backups (finished_at DESC);

-- Every verification, passed or failed: a restore into a scratch database whose row
-- counts and checksums were compared with the manifest.
CREATE TABLE backup_verifications (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    backup_id   text NOT NULL,
    location    text NOT NULL,
    verified_at timestamptz NOT NULL,
    ok          boolean NOT NULL,
    seconds     double precision NOT NULL,
    problem     text                    -- why it failed; NULL when ok
);

CREATE INDEX backup_verifications_verified_at ON backup_verifications (verified_at DESC);
