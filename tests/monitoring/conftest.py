"""What the monitoring tests share: deploy/prometheus and Debian's Prometheus tools."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROMETHEUS_DIR = Path(__file__).parent.parent.parent / "deploy" / "prometheus"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (scripts/test installs Debian's prometheus)")
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool")


@pytest.fixture(scope="session")
def prometheus() -> str:
    return _tool("prometheus")
