-- The worker forgets message ids older than the de-duplication window.
CREATE INDEX message_ledger_received_idx ON message_ledger (received_at);
-- The worker finds devices that fell silent while shown online.
CREATE INDEX devices_online_seen_idx ON devices (last_seen) WHERE status = 'online';
