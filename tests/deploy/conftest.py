"""What the deploy/ tests share: where deploy/ is, and the tools that own its formats."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parent.parent.parent / "deploy"


@pytest.fixture(scope="session")
def caddy() -> str:
    found = shutil.which("caddy")
    if found is None:
        pytest.fail("caddy is not installed (scripts/test installs Debian's package)")
    return found
