"""Notification channels and the durable outbox that delivers alerts to them (SPEC §6)."""
