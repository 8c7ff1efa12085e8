"""What a simulated device checks before it installs an image: size, sha256, then the
Ed25519 signature of the manifest by one of the published keys."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldline.domain.firmware import Image, TrustedKey, sign
from fieldline.sim.firmware import FirmwareOffer, Keyring, OfferError, verify_image
from fieldline.sim.ota import Fate, fate_of, link_drops

IMAGE = os.urandom(5_000)


def published(*keys: Ed25519PrivateKey) -> Keyring:
    """The keys as `GET /api/v1/firmware/keys` answers them."""
    items = [
        {
            "key_id": TrustedKey.of(k.public_key()).key_id,
            "public_key": TrustedKey.of(k.public_key()).public_base64(),
            "active": i == 0,
        }
        for i, k in enumerate(keys)
    ]
    return Keyring.from_json({"items": items})


def offer_for(image: bytes, key: Ed25519PrivateKey, **changes: object) -> FirmwareOffer:
    signed = Image("soil-v2", "1.4.0", hashlib.sha256(image).hexdigest(), len(image))
    body: dict[str, object] = {
        "device_model": signed.device_model,
        "version": signed.version,
        "binary_url": "http://127.0.0.1/firmware/soil-v2/1.4.0/binary",
        "sha256": signed.sha256,
        "signature": sign(key, signed),
        "key_id": TrustedKey.of(key.public_key()).key_id,
        "size_bytes": signed.size_bytes,
        "rollout_id": 7,
        "allow_downgrade": False,
    }
    body.update(changes)
    return FirmwareOffer.from_json(body)


def test_a_genuine_image_may_be_installed() -> None:
    key = Ed25519PrivateKey.generate()

    assert verify_image(offer_for(IMAGE, key), IMAGE, published(key)) is None


def test_one_tampered_byte_fails_the_sha256() -> None:
    key = Ed25519PrivateKey.generate()
    tampered = bytearray(IMAGE)
    tampered[1234] ^= 0x01

    assert verify_image(offer_for(IMAGE, key), bytes(tampered), published(key)) == "sha256 mismatch"


def test_metadata_rewritten_for_a_tampered_image_fails_the_signature() -> None:
    """Whoever changes the bytes and the sha256 beside them cannot sign the manifest."""
    key = Ed25519PrivateKey.generate()
    tampered = bytearray(IMAGE)
    tampered[0] ^= 0xFF
    genuine = offer_for(IMAGE, key)
    forged = offer_for(bytes(tampered), key, signature=genuine.signature)

    assert verify_image(forged, bytes(tampered), published(key)) == "bad signature"


def test_a_signature_for_another_version_or_model_does_not_carry_over() -> None:
    key = Ed25519PrivateKey.generate()
    genuine = offer_for(IMAGE, key)

    for changes in ({"version": "1.5.0"}, {"device_model": "soil-v3"}):
        replayed = offer_for(IMAGE, key, signature=genuine.signature, **changes)
        assert verify_image(replayed, IMAGE, published(key)) == "bad signature"


def test_a_signature_by_a_key_not_published_is_refused() -> None:
    platform, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    offer = offer_for(IMAGE, stranger)

    assert verify_image(offer, IMAGE, published(platform)) == (
        f"unknown signing key {offer.key_id}"
    )


def test_an_older_key_still_published_verifies_its_images() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    assert verify_image(offer_for(IMAGE, old), IMAGE, published(new, old)) is None


def test_a_short_image_is_refused_before_its_digest() -> None:
    key = Ed25519PrivateKey.generate()

    problem = verify_image(offer_for(IMAGE, key), IMAGE[:-1], published(key))

    assert problem == f"size mismatch: {len(IMAGE) - 1} bytes, expected {len(IMAGE)}"


def test_a_key_list_with_a_key_that_is_no_ed25519_key_is_refused() -> None:
    not_a_key = base64.b64encode(b"\x01" * 31).decode()

    with pytest.raises(OfferError):
        Keyring.from_json({"items": [{"key_id": "x", "public_key": not_a_key}]})


def test_a_garbled_signature_is_a_bad_signature() -> None:
    key = Ed25519PrivateKey.generate()
    offer = offer_for(IMAGE, key, signature="not base64!")

    assert verify_image(offer, IMAGE, published(key)) == "bad signature"


def test_the_key_id_a_list_claims_is_not_trusted() -> None:
    """A key is known by the id its bytes give, whatever the list says."""
    key = Ed25519PrivateKey.generate()
    keyring = Keyring.from_json(
        {
            "items": [
                {
                    "key_id": "0000000000000000",
                    "public_key": TrustedKey.of(key.public_key()).public_base64(),
                }
            ]
        }
    )
    assert "0000000000000000" not in keyring
    assert TrustedKey.of(key.public_key()).key_id in keyring


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sha256", None),
        ("size_bytes", "5000"),
        ("size_bytes", -1),
        ("binary_url", ""),
        ("rollout_id", "7"),
    ],
)
def test_metadata_a_device_cannot_act_on_is_refused(field: str, value: object) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(OfferError, match=field):
        offer_for(IMAGE, key, **{field: value})


def test_fates_are_fixed_per_device_and_take_their_shares() -> None:
    ids = [f"sim-{n:04d}" for n in range(1, 2001)]
    fates = [fate_of(d, fail_percent=10, rollback_percent=20) for d in ids]

    assert fates == [fate_of(d, fail_percent=10, rollback_percent=20) for d in ids]
    assert 150 <= fates.count(Fate.FLASH_FAILS) <= 250
    assert 330 <= fates.count(Fate.ROLLS_BACK) <= 470
    # A device failing at 10% fails at 30% too: shares grow, they do not reshuffle.
    wider = [fate_of(d, fail_percent=30, rollback_percent=0) for d in ids]
    assert all(
        w is Fate.FLASH_FAILS for f, w in zip(fates, wider, strict=True) if f is Fate.FLASH_FAILS
    )
    assert {fate_of(d, fail_percent=0, rollback_percent=0) for d in ids} == {Fate.HEALTHY}
    assert all(link_drops(d, cut_percent=100) for d in ids)
    assert not any(link_drops(d, cut_percent=0) for d in ids)
