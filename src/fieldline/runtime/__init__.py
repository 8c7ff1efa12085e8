"""Running fieldline's components: the HTTP API, ingest and the worker.

`supervisor.run_platform` is what `fieldline up` runs: the database and broker it
manages, then every component as a named task in one TaskGroup, so a failure
of any part stops the whole group cleanly (beside the in-process amqtt broker,
ingest is a child process that a task of the group supervises).
`components.run_api`, `run_ingest` and `run_worker` run one component each as
its own process, against an external PostgreSQL and broker (the production
topology).

Every stop ends in bounded time, also while the database is down or a write
hangs: ingest stores what it holds for at most INGEST_DRAIN_SECONDS (the rest
stays unacknowledged at the broker, which sends it again), then whatever still
runs STOP_GRACE_SECONDS after the stop was asked is cancelled; each step after
that (broker, pool, database server) has its own bound. Added up, `fieldline
up` stops within 90 s in every case (systemd's default TimeoutStopSec), and in
about 35 s when its database hangs.
"""
