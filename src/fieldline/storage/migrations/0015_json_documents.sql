-- Documents users and devices send (desired configuration, command parameters and
-- results, device metadata) are kept as JSON text (`json`), no longer as `jsonb`.
--
-- jsonb stores numbers as `numeric` and writes them back without an exponent: 1.5e300
-- came back as a 301-digit integer (which the API then failed to encode: a 500, or a
-- group configuration that silently reached no device), 1e19 came back as the integer
-- 10000000000000000000, -0.0 as 0.0. `json` keeps the text fieldline wrote, so what is
-- PUT is what the device receives and what GET answers. Nothing queries inside these
-- documents, so jsonb's operators and indexes are not missed.
--
-- What jsonb already rewrote cannot be told from what was sent, except integers beyond
-- 64 bits, which fieldline never accepts as integers: those were floats (1.5e300), and
-- become floats again, so documents stored before this keep working.

CREATE FUNCTION pg_temp.fieldline_json(doc jsonb) RETURNS json
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    parts text[];
    key text;
    item jsonb;
BEGIN
    CASE jsonb_typeof(doc)
    WHEN 'object' THEN
        FOR key, item IN SELECT e.key, e.value FROM jsonb_each(doc) AS e LOOP
            parts := parts || (to_json(key)::text || ':' || pg_temp.fieldline_json(item)::text);
        END LOOP;
        RETURN ('{' || coalesce(array_to_string(parts, ','), '') || '}')::json;
    WHEN 'array' THEN
        FOR item IN SELECT e.value FROM jsonb_array_elements(doc) AS e LOOP
            parts := parts || pg_temp.fieldline_json(item)::text;
        END LOOP;
        RETURN ('[' || coalesce(array_to_string(parts, ','), '') || ']')::json;
    WHEN 'number' THEN
        IF scale(doc::numeric) = 0
           AND doc::numeric NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
            RETURN to_json(doc::numeric::float8);
        END IF;
        RETURN doc::json;
    ELSE
        RETURN doc::json;
    END CASE;
END
$$;

ALTER TABLE group_configs
    ALTER COLUMN config TYPE json USING pg_temp.fieldline_json(config);

ALTER TABLE device_configs
    ALTER COLUMN config DROP DEFAULT,
    ALTER COLUMN effective DROP DEFAULT,
    ALTER COLUMN config TYPE json USING pg_temp.fieldline_json(config),
    ALTER COLUMN effective TYPE json USING pg_temp.fieldline_json(effective),
    ALTER COLUMN config SET DEFAULT '{}'::json,
    ALTER COLUMN effective SET DEFAULT '{}'::json;

ALTER TABLE config_changes
    ALTER COLUMN config TYPE json USING pg_temp.fieldline_json(config);

ALTER TABLE commands
    ALTER COLUMN params DROP DEFAULT,
    ALTER COLUMN params TYPE json USING pg_temp.fieldline_json(params),
    ALTER COLUMN params SET DEFAULT '{}'::json,
    ALTER COLUMN result TYPE json USING pg_temp.fieldline_json(result);

ALTER TABLE devices
    ALTER COLUMN metadata DROP DEFAULT,
    ALTER COLUMN metadata TYPE json USING pg_temp.fieldline_json(metadata),
    ALTER COLUMN metadata SET DEFAULT '{}'::json;

DROP FUNCTION pg_temp.fieldline_json(jsonb);
