"""Python's cyclic garbage collector, tuned for ingest.

Ingest holds up to `FIELDLINE_INGEST_MAX_PENDING` decoded messages at once, each
a handful of objects. With the default thresholds (a collection every 700 new
objects) the collector walks all of them many times a second: a third of the
decoding time in `fieldline bench` profiles. Objects alive since start-up are
frozen out of collection, and the youngest generation is collected every 10,000
new objects instead. Process-wide, so only the `fieldline up` and `fieldline ingest`
commands call it, never the library (tests run components in their own process).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
OLDER_THRESHOLDS = (50, 100)


def tune_for_throughput() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
