"""A private CA and the MQTT broker's server certificate, for MQTT over TLS.

Devices are given the CA certificate at registration and verify the broker
with it, so the CA is long-lived and never replaced behind the fleet's back:
issuing again keeps an existing CA and only signs a new server certificate
(new names, or renewal before it expires). A new CA takes `force=True`, after
which every device must be given the new CA certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fieldline.ops.files import write_atomically

KeyType = Literal["ecdsa", "rsa"]
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_DAYS = 3650
# The most any TLS client accepts for a server certificate (Apple's limit).
SERVER_DAYS = 825
# Devices whose clock runs a little behind must not see a "not yet valid" certificate.
BACKDATE = dt.timedelta(hours=1)
# An existing CA this close to expiring is refused: its server certificates would die with it.
CA_MIN_REMAINING = dt.timedelta(days=30)
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not a bind
_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"(?:\*\.)?{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?")


class CertificateAuthorityError(RuntimeError):
    """The directory holds a CA fieldline will not use, and will not replace unasked."""


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Where `fieldline certs` writes, and the managed broker reads by default."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"


@dataclass(frozen=True, slots=True)
class IssuedCertificates:
    files: CertificateFiles
    ca_created: bool  # False: the existing CA was kept
    ca_fingerprint: str  # SHA-256 of the CA certificate, colon-separated hex
    names: tuple[str, ...]  # subject alternative names of the server certificate
    server_expires: dt.datetime


def default_names() -> tuple[str, ...]:
    """Names a broker on this machine is reached by: loopback and the hostname."""
    return _unique_names(["localhost", "127.0.0.1", "::1", socket.gethostname()], strict=False)


def issue_certificates(
    directory: Path,
    *,
    names: Sequence[str] | None = None,
    key_type: KeyType = "ecdsa",
    force: bool = False,
    now: dt.datetime | None = None,
) -> IssuedCertificates:
    """Write a server certificate for `names` (default `default_names()`), and a CA if none.

    Raises ValueError for a name that is neither a DNS name nor an IP address, and
    CertificateAuthorityError when an existing CA is unusable and `force` is not set.
    """
    now = now or dt.datetime.now(dt.UTC)
    chosen = _unique_names(default_names() if names is None else names, strict=True)
    if not chosen:
        raise ValueError("a server certificate needs at least one name")
    files = CertificateFiles(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = None if force else _load_ca(files, now)
    if existing is None:
        ca_key = _new_key(key_type)
        ca_cert = _ca_certificate(ca_key, now)
        _write(files.ca_key, _key_pem(ca_key), mode=0o600)
        _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    else:
        ca_cert, ca_key = existing
    server_key = _new_key(key_type)
    server_cert = _server_certificate(server_key, ca_cert, ca_key, chosen, now)
    _write(files.server_key, _key_pem(server_key), mode=0o600)
    _write(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return IssuedCertificates(
        files=files,
        ca_created=existing is None,
        ca_fingerprint=certificate_fingerprint(ca_cert),
        names=chosen,
        server_expires=server_cert.not_valid_after_utc,
    )


def certificate_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def read_certificate(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file; OSError when unreadable, ValueError when not PEM."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def key_matches(cert: x509.Certificate, key_file: Path) -> bool:
    """Whether the unencrypted PEM private key in `key_file` is `cert`'s (OSError when
    unreadable, ValueError or TypeError when not an unencrypted key)."""
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return False
    return _spki(cert.public_key()) == _spki(key.public_key())


def client_ssl_context(ca_file: Path) -> ssl.SSLContext:
    """TLS for a client that trusts only `ca_file` and checks the server's name."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _unique_names(names: Iterable[str], *, strict: bool) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for raw in names:
        try:
            seen[_normalise(raw)] = None
        except ValueError:
            if strict:
                raise
    return tuple(seen)


def _normalise(name: str) -> str:
    text = name.strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if not _DNS_NAME.fullmatch(text) or len(text) > 253:
        raise ValueError(f"{name!r} is neither a DNS name nor an IP address")
    return text.rstrip(".").lower()


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _new_key(key_type: KeyType) -> SigningKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: SigningKey) -> bytes:
    # Unencrypted: Mosquitto reads it unattended at every start.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fieldline"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(key: SigningKey, now: dt.datetime) -> x509.Certificate:
    # The hostname tells one installation's CA from another's in a device's trust store.
    name = _name(f"fieldline CA {socket.gethostname()}"[:64])
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _server_certificate(
    key: SigningKey,
    ca_cert: x509.Certificate,
    ca_key: SigningKey,
    names: Sequence[str],
    now: dt.datetime,
) -> x509.Certificate:
    public = key.public_key()
    expires = min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(_name(names[0][:64]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(expires)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # RSA key exchange (TLS 1.2 without ECDHE) encrypts to the server's key.
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _load_ca(
    files: CertificateFiles, now: dt.datetime
) -> tuple[x509.Certificate, SigningKey] | None:
    """The CA already in the directory; None when there is none at all."""
    has_cert, has_key = files.ca_cert.exists(), files.ca_key.exists()
    if not (has_cert or has_key):
        return None
    refuse = "; --force creates a new CA, which every device must then be given"
    if not (has_cert and has_key):
        present, absent = (
            (files.ca_cert, files.ca_key) if has_cert else (files.ca_key, files.ca_cert)
        )
        raise CertificateAuthorityError(f"{present} exists without {absent}{refuse}")
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateAuthorityError(
            f"cannot read the CA in {files.directory}: {exc}{refuse}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateAuthorityError(f"{files.ca_key} is neither an ECDSA nor an RSA key")
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise CertificateAuthorityError(f"{files.ca_key} is not the key of {files.ca_cert}{refuse}")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertificateAuthorityError(f"{files.ca_cert} is not a CA certificate{refuse}")
    if cert.not_valid_after_utc - now < CA_MIN_REMAINING:
        raise CertificateAuthorityError(
            f"the CA in {files.ca_cert} expires {cert.not_valid_after_utc:%Y-%m-%d}{refuse}"
        )
    return cert, key


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write(path: Path, data: bytes, *, mode: int) -> None:
    """Atomically, so a crash never leaves half a key; keys are created 0600, never wider."""
    write_atomically(path, data, mode=mode)
