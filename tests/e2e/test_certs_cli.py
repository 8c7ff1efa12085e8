"""`fieldline certs` as an operator runs it."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.e2e.test_cli import fieldline


def ca_fingerprint(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def test_certs_writes_a_ca_once_and_renews_the_server_certificate(tmp_path: Path) -> None:
    env = {"FIELDLINE_DATA_DIR": str(tmp_path), "FIELDLINE_MQTT_PUBLIC_HOST": "mqtt.example.com"}

    first = fieldline("certs", "--san", "10.1.2.3", env=env)

    assert first.returncode == 0, first.stderr
    certs = tmp_path / "certs"
    assert {p.name for p in certs.iterdir()} == {"ca.crt", "ca.key", "server.crt", "server.key"}
    fingerprint = ca_fingerprint(certs / "ca.crt")
    assert f"SHA256 {fingerprint}" in first.stdout
    assert "created" in first.stdout
    names = next(line for line in first.stdout.splitlines() if line.startswith("names"))
    assert all(name in names for name in ("localhost", "mqtt.example.com", "10.1.2.3"))

    again = fieldline("certs", env=env)
    assert again.returncode == 0, again.stderr
    assert "kept" in again.stdout and f"SHA256 {fingerprint}" in again.stdout
    assert ca_fingerprint(certs / "ca.crt") == fingerprint

    (certs / "ca.key").unlink()
    refused = fieldline("certs", env=env)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert ca_fingerprint(certs / "ca.crt") == fingerprint

    forced = fieldline("certs", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert ca_fingerprint(certs / "ca.crt") != fingerprint
    assert "give every device the new ca.crt" in forced.stdout


def test_certs_out_writes_where_asked(tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    written = fieldline("certs", "--out", str(out), env={"FIELDLINE_DATA_DIR": str(tmp_path)})
    assert written.returncode == 0, written.stderr
    assert (out / "server.crt").is_file() and not (tmp_path / "certs").exists()


def test_certs_refuses_a_name_that_is_no_host(tmp_path: Path) -> None:
    bad = fieldline("certs", "--san", "not a host", env={"FIELDLINE_DATA_DIR": str(tmp_path)})
    assert bad.returncode == 1 and "neither a DNS name nor an IP address" in bad.stderr
