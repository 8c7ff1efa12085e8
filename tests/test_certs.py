"""The CA and server certificate `fieldline certs` writes, checked with Python's ssl and openssl."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from fieldline.security.certs import (
    CertificateAuthorityError,
    IssuedCertificates,
    client_ssl_context,
    issue_certificates,
)


def handshake(issued: IssuedCertificates, server_name: str, ca_file: Path | None = None) -> None:
    """A TLS handshake in memory: this server certificate against a client trusting the CA."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(issued.files.server_cert, issued.files.server_key)
    client_ctx = client_ssl_context(ca_file or issued.files.ca_cert)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def san(issued: IssuedCertificates) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(issued.files.server_cert.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_a_fresh_directory_gets_a_ca_and_a_server_certificate_that_verify(tmp_path: Path) -> None:
    issued = issue_certificates(tmp_path / "certs")

    assert issued.ca_created
    for name in ("localhost", "127.0.0.1", "::1", socket.gethostname()):
        handshake(issued, name)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(issued, "mqtt.example.com")
    names = san(issued)
    dns_names = set(names.get_values_for_type(x509.DNSName))
    assert {"localhost", socket.gethostname().lower()} <= dns_names
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")} <= set(
        names.get_values_for_type(x509.IPAddress)
    )


def test_named_certificate_carries_exactly_those_names(tmp_path: Path) -> None:
    issued = issue_certificates(
        tmp_path, names=["mqtt.example.com", "10.0.0.7", "[fd00::1]", "MQTT.example.com."]
    )

    assert issued.names == ("mqtt.example.com", "10.0.0.7", "fd00::1")
    assert san(issued).get_values_for_type(x509.DNSName) == ["mqtt.example.com"]
    assert san(issued).get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("fd00::1"),
    ]
    handshake(issued, "mqtt.example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(issued, "localhost")
    with pytest.raises(ValueError, match="neither a DNS name nor an IP address"):
        issue_certificates(tmp_path, names=["not a host"])


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_verifies_the_chain_strictly(tmp_path: Path) -> None:
    issued = issue_certificates(tmp_path)
    verified = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            str(issued.files.ca_cert),
            str(issued.files.server_cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().endswith(": OK")


def test_keys_are_private_and_lifetimes_sensible(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    issued = issue_certificates(tmp_path / "certs", now=now)
    files = issued.files

    assert stat.S_IMODE(os.stat(files.ca_key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(files.server_key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(files.directory).st_mode) == 0o700
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert ca.not_valid_after_utc - now >= dt.timedelta(days=3649)
    assert dt.timedelta(days=800) < server.not_valid_after_utc - now <= dt.timedelta(days=825)
    assert server.not_valid_after_utc == issued.server_expires
    key = load_pem_private_key(files.server_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


def test_rsa_keys_on_request(tmp_path: Path) -> None:
    issued = issue_certificates(tmp_path, key_type="rsa")

    for path in (issued.files.ca_key, issued.files.server_key):
        key = load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    handshake(issued, "localhost")


def test_rerun_keeps_the_ca_and_issues_a_new_server_certificate(tmp_path: Path) -> None:
    first = issue_certificates(tmp_path, names=["localhost"])
    ca_pem, ca_key = first.files.ca_cert.read_bytes(), first.files.ca_key.read_bytes()
    old_server = first.files.server_cert.read_bytes()

    second = issue_certificates(tmp_path, names=["localhost", "mqtt.example.com"])

    assert not second.ca_created
    assert second.ca_fingerprint == first.ca_fingerprint
    assert (second.files.ca_cert.read_bytes(), second.files.ca_key.read_bytes()) == (
        ca_pem,
        ca_key,
    )
    assert second.files.server_cert.read_bytes() != old_server
    handshake(second, "mqtt.example.com")  # devices trusting the old CA file accept it


def test_force_replaces_the_ca(tmp_path: Path) -> None:
    first = issue_certificates(tmp_path)
    kept = tmp_path / "old-ca.crt"
    shutil.copy(first.files.ca_cert, kept)

    second = issue_certificates(tmp_path, force=True)

    assert second.ca_created and second.ca_fingerprint != first.ca_fingerprint
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(second, "localhost", ca_file=kept)


def test_an_unusable_ca_is_refused_not_replaced(tmp_path: Path) -> None:
    issued = issue_certificates(tmp_path)
    other = issue_certificates(tmp_path / "other")
    ca_pem = issued.files.ca_cert.read_bytes()

    shutil.copy(other.files.ca_key, issued.files.ca_key)
    with pytest.raises(CertificateAuthorityError, match="is not the key of"):
        issue_certificates(tmp_path)
    issued.files.ca_key.unlink()
    with pytest.raises(CertificateAuthorityError, match="exists without"):
        issue_certificates(tmp_path)
    assert issued.files.ca_cert.read_bytes() == ca_pem  # the fleet's CA is still there
    assert issue_certificates(tmp_path, force=True).ca_created


def test_an_expiring_ca_is_refused(tmp_path: Path) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3640)
    issue_certificates(tmp_path, now=long_ago)

    with pytest.raises(CertificateAuthorityError, match="expires"):
        issue_certificates(tmp_path)


def test_a_server_certificate_never_outlives_its_ca(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    issue_certificates(tmp_path, now=now - dt.timedelta(days=3400))

    renewed = issue_certificates(tmp_path, now=now)

    ca = x509.load_pem_x509_certificate(renewed.files.ca_cert.read_bytes())
    assert renewed.server_expires == ca.not_valid_after_utc < now + dt.timedelta(days=825)
    handshake(renewed, "localhost")
