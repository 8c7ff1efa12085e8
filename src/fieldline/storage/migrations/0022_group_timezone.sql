-- A group's own time zone (issue 16): an IANA name such as Europe/Berlin, checked by the
-- API against the zones the server knows; NULL: the group has none, and the dashboard
-- shows the viewer's choice (browser or UTC).
ALTER TABLE groups ADD COLUMN timezone text;
