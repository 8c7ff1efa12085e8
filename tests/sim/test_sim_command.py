"""`fieldline simulate` from the command line."""

from __future__ import annotations

from click.testing import CliRunner

from fieldline.ops.sockets import free_port
from fieldline.sim.command import simulate

from .conftest import Broker


def test_simulate_runs_and_summarises(broker: Broker) -> None:
    result = CliRunner().invoke(
        simulate,
        [
            "--devices",
            "2",
            "--rate",
            "5",
            "--duration",
            "0.5",
            "--mqtt-port",
            str(broker.port),
            "--bad-every",
            "2",
        ],
        env={"FIELDLINE_MQTT_HOST": broker.host},
    )

    assert result.exit_code == 0, result.output
    assert "devices connected: 2/2" in result.output
    assert "bad " in result.output


def test_simulate_fails_when_no_device_connects() -> None:
    result = CliRunner().invoke(
        simulate,
        ["--devices", "1", "--duration", "0.1", "--mqtt-port", str(free_port("127.0.0.1"))],
    )

    assert result.exit_code == 1
    assert "devices connected: 0/1" in result.output


def test_simulate_create_needs_api_credentials() -> None:
    unset = {
        "FIELDLINE_API_USERNAME": None,
        "FIELDLINE_API_PASSWORD": None,
        "FIELDLINE_API_KEY": None,
    }
    result = CliRunner().invoke(
        simulate, ["--create", "--duration", "0", "--api-url", "http://127.0.0.1:9"], env=unset
    )

    assert result.exit_code == 1
    assert "give --api-key, or --username and --password" in result.output


def test_simulate_reports_an_unreachable_api() -> None:
    result = CliRunner().invoke(
        simulate,
        [
            "--create",
            "--duration",
            "0",
            "--api-url",
            f"http://127.0.0.1:{free_port('127.0.0.1')}",
            "--api-key",
            "k",
        ],
    )

    assert result.exit_code == 1
    assert "cannot reach the API" in result.output
