"""Backups: the database (pg_dump) and the data directory's secrets, proven to restore.

`fieldline backup create|list|verify` and `fieldline restore` (cli/backup.py), and the
worker's daily `backup` and `backup_verify` jobs (worker/backup.py) share these
modules. Long steps report to a progress bar: the command line's (cli/progress.py) on a
terminal, none in the worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fieldline.cli.progress import Progress

# A progress bar of `total` steps under a description: cli.progress.progress, or none.
Bars = Callable[[str, float | None], AbstractContextManager["Progress"]]


class _Unseen:
    def advance(self, amount: float = 1) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


@contextlib.contextmanager
def no_bars(_description: str, _total: float | None) -> Iterator[Progress]:
    """No progress shown (the worker)."""
    yield _Unseen()
