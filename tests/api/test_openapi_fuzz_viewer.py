"""The OpenAPI fuzz of tests/api/test_openapi_fuzz.py as a viewer, on a platform of its own:
a file apart, so that pytest-xdist (one file per worker at a time) runs it beside the
admin's run instead of after it."""

from __future__ import annotations

from tests.api.test_openapi_fuzz import (  # noqa: F401  (its module-scoped fixtures, here too)
    Seed,
    fuzz_every_operation,
    platform,
    seed,
)
from tests.conftest import FaultReport
from tests.e2e.conftest import Platform


def test_no_generated_request_as_a_viewer_gets_a_server_error_or_an_undocumented_answer(
    platform: Platform,  # noqa: F811
    seed: Seed,  # noqa: F811
    fault_report: FaultReport,
) -> None:
    fuzz_every_operation(platform, seed, "viewer", fault_report)
