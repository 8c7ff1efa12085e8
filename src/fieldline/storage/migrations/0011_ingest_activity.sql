-- Readings stored per 10-second bucket, for the dashboard's live ingest rate.
-- Each writer connection counts into a row of its own (`writer` = its backend pid), so
-- ingest processes never wait on each other's row locks. The worker forgets old rows.
CREATE TABLE ingest_activity (
    bucket   timestamptz NOT NULL,
    writer   integer NOT NULL,
    readings bigint NOT NULL,
    points   bigint NOT NULL,
    PRIMARY KEY (bucket, writer)
);

-- A key for paging through a device's status history (events can share a time).
ALTER TABLE device_status_events ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
