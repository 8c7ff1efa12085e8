"""The schema each release shipped: the number of the last migration it applied.

An upgrade starts from one of these. tests/deploy/test_upgrade.py builds the previous
release's schema with `migrate(url, up_to=SCHEMA_OF_RELEASE[PREVIOUS_RELEASE])` and
follows docs/deploy.md's upgrade from it. When a release is made, add its row and
name it here as the previous one.
"""

from __future__ import annotations

from typing import Final

SCHEMA_OF_RELEASE: Final[dict[str, int]] = {
    "0.1.0": 23,  # 0023_firmware_rollouts
}
PREVIOUS_RELEASE: Final = "0.1.0"
