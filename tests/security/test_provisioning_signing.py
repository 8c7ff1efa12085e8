"""Provisioning signatures and sealed key secrets, without a server."""

from __future__ import annotations

import re

import pytest

from fieldline.security.provisioning import (
    CLOCK_TOLERANCE_SECONDS,
    KEY_ID_PREFIX,
    SealedSecretError,
    SecretBox,
    canonical_signature,
    is_fresh,
    new_key,
    parse_timestamp,
    sign,
    signature_matches,
)

BODY = b'{"device_id":"sensor-1"}'
# printf '%s' '1700000000.{"device_id":"sensor-1"}' | openssl dgst -sha256 -hmac 'factory-secret'
OPENSSL_SIGNATURE = "4d95ef09fcf09616133d84ebddf1ce18da58b8e412d5f68a6e295ff16ea28476"


def test_signature_is_the_documented_recipe() -> None:
    assert sign("factory-secret", 1700000000, BODY) == OPENSSL_SIGNATURE
    assert sign("factory-secret", "1700000000", BODY) == OPENSSL_SIGNATURE


def test_a_signature_matches_only_its_own_key_timestamp_and_body() -> None:
    assert signature_matches("factory-secret", "1700000000", BODY, OPENSSL_SIGNATURE)
    assert signature_matches("factory-secret", "1700000000", BODY, OPENSSL_SIGNATURE.upper())
    assert not signature_matches("other-secret", "1700000000", BODY, OPENSSL_SIGNATURE)
    assert not signature_matches("factory-secret", "1700000001", BODY, OPENSSL_SIGNATURE)
    # The timestamp is signed as the header's text: another spelling is another message.
    assert not signature_matches("factory-secret", "01700000000", BODY, OPENSSL_SIGNATURE)
    assert not signature_matches("factory-secret", "1700000000", BODY + b" ", OPENSSL_SIGNATURE)
    assert not signature_matches(
        "factory-secret", "1700000000", b'{"device_id": "sensor-1"}', OPENSSL_SIGNATURE
    )


@pytest.mark.parametrize(
    "presented",
    ["", "zz" * 32, OPENSSL_SIGNATURE[:-1], OPENSSL_SIGNATURE + "0", f" {OPENSSL_SIGNATURE}"],
)
def test_malformed_signatures_never_match(presented: str) -> None:
    assert canonical_signature(presented) is None
    assert not signature_matches("factory-secret", "1700000000", BODY, presented)


def test_canonical_signature_is_lowercase() -> None:
    assert canonical_signature(OPENSSL_SIGNATURE.upper()) == OPENSSL_SIGNATURE


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("1700000000", 1700000000),
        ("1700000000000", 1700000000000),  # milliseconds parse, and are then stale
        ("-5", -5),
        ("1700000000.5", None),
        ("1e9", None),
        ("", None),
        (" 1700000000", None),
        ("2023-11-14T22:13:20Z", None),
    ],
)
def test_timestamps_are_whole_epoch_seconds(header: str, expected: int | None) -> None:
    assert parse_timestamp(header) == expected


def test_clock_tolerance_applies_both_ways() -> None:
    now = 1_700_000_000.0
    tolerance = CLOCK_TOLERANCE_SECONDS
    assert is_fresh(int(now), now)
    assert is_fresh(int(now) - tolerance, now)
    assert is_fresh(int(now) + tolerance, now)
    assert not is_fresh(int(now) - tolerance - 1, now)
    assert not is_fresh(int(now) + tolerance + 1, now)
    assert not is_fresh(int(now * 1000), now)


def test_new_keys_are_random_and_well_formed() -> None:
    keys = [new_key() for _ in range(50)]
    assert len({k for k, _ in keys}) == len({s for _, s in keys}) == 50
    for key_id, secret in keys:
        assert re.fullmatch(rf"{KEY_ID_PREFIX}[0-9a-f]{{20}}", key_id)
        assert re.fullmatch(r"[0-9a-f]{64}", secret)


def test_sealed_secrets_open_only_with_their_server_key_and_key_id() -> None:
    box = SecretBox.from_secret_key("k" * 40)
    sealed = box.seal("the-secret", key_id="pk_1")
    assert b"the-secret" not in sealed
    assert box.seal("the-secret", key_id="pk_1") != sealed  # a fresh nonce each time
    assert SecretBox.from_secret_key("k" * 40).open(sealed, key_id="pk_1") == "the-secret"
    with pytest.raises(SealedSecretError):
        SecretBox.from_secret_key("j" * 40).open(sealed, key_id="pk_1")
    with pytest.raises(SealedSecretError):
        box.open(sealed, key_id="pk_2")  # moved to another key's row
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SealedSecretError):
        box.open(tampered, key_id="pk_1")
    with pytest.raises(SealedSecretError):
        box.open(b"short", key_id="pk_1")
