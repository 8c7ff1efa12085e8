-- What a metric is, per device type (issue 16): the name people read, its unit, how many
-- decimals to show, and its kind (a number; a boolean or an enum drawn as states; a
-- latitude or longitude drawn on a map). device_type '*' applies to every type that has
-- no entry of its own for the metric.
CREATE TABLE metric_metadata (
    device_type  text NOT NULL,
    metric       text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    unit         text NOT NULL DEFAULT '',
    decimals     smallint CHECK (decimals BETWEEN 0 AND 9),
    kind         text NOT NULL DEFAULT 'number'
                 CHECK (kind IN ('number', 'boolean', 'enum', 'latitude', 'longitude')),
    labels       jsonb NOT NULL DEFAULT '{}',   -- enum and boolean: value -> label
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   text NOT NULL,
    PRIMARY KEY (device_type, metric)
);
