"""Firmware and rollouts: the API in-process (as tests/api runs it) with its publisher."""

from tests.api.conftest import admin, api, publisher  # noqa: F401
