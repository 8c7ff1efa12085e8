"""deploy/prometheus checked by the tool that owns its format: the rules load, each rule's
promtool cases pass, the example configuration is valid, and every rule has cases."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.monitoring.conftest import PROMETHEUS_DIR

RULES = PROMETHEUS_DIR / "fieldline-rules.yml"


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        check=False,
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rules_load(promtool: str) -> None:
    result = promtool_run(promtool, "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_cases_pass(promtool: str) -> None:
    result = promtool_run(promtool, "test", "rules", "fieldline-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_configuration_is_valid(promtool: str) -> None:
    result = promtool_run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_fires_and_stays_quiet_in_a_case() -> None:
    rules = yaml.safe_load(RULES.read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases: dict[str, list[Any]] = {name: [] for name in names}
    tests = yaml.safe_load((PROMETHEUS_DIR / "fieldline-rules.test.yml").read_text())["tests"]
    for test in tests:
        for case in test.get("alert_rule_test", []):
            cases[case["alertname"]].append(bool(case.get("exp_alerts")))
    fires = sorted(name for name, seen in cases.items() if True not in seen)
    quiet = sorted(name for name, seen in cases.items() if False not in seen)
    assert (fires, quiet) == ([], []), "rules without a firing or a quiet case"


def test_every_rule_has_a_severity_and_runbook_words() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
