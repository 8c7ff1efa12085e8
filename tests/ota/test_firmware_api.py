"""Firmware images through the API (SPEC §5, docs/ota.md), on real PostgreSQL and broker:
signed by the platform or by a trusted offline key, checked with an Ed25519 implementation
that is not ours (libsodium), fetched by devices whole or by byte ranges."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nacl.exceptions
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from fieldline.api.context import ApiContext
from fieldline.broker.publisher import Publisher
from fieldline.config import Settings
from fieldline.domain.firmware import Image, key_id_of, raw_public, sign
from fieldline.domain.topics import TopicScheme
from fieldline.ota.engine import rollout_round
from fieldline.ota.keys import FirmwareKeys, KeyConfigurationError
from fieldline.storage.firmware import CHUNK_BYTES
from tests.api.conftest import Api

MODEL = "soil-v2"
IMAGE = os.urandom(CHUNK_BYTES * 2 + 12_345)  # three pieces, the last one short
SHA = hashlib.sha256(IMAGE).hexdigest()


async def upload(
    api: Api, headers: dict[str, str], version: str, data: bytes = IMAGE, **fields: str
) -> httpx.Response:
    return await api.http.post(
        "/api/v1/firmware",
        headers=headers,
        data={"device_model": MODEL, "version": version, **fields},
        files={"file": ("soil.bin", data, "application/octet-stream")},
    )


def manifest(model: str, version: str, sha256: str, size: int) -> bytes:
    return f"fieldline-fw-v1\n{model}\n{version}\n{sha256}\n{size}".encode()


async def test_an_image_signed_by_fieldline_verifies_with_the_published_key(
    api: Api, admin: dict[str, str]
) -> None:
    answer = await upload(api, admin, "1.4.0", release_notes="Faster reconnect")
    assert answer.status_code == 201, answer.text
    image = answer.json()
    assert (image["sha256"], image["size_bytes"]) == (SHA, len(IMAGE))

    keys = (await api.http.get("/api/v1/firmware/keys")).json()["items"]  # no credentials
    (active,) = [key for key in keys if key["active"]]
    assert active["key_id"] == image["key_id"]
    verify_key = nacl.signing.VerifyKey(base64.b64decode(active["public_key"]))
    signature = base64.b64decode(image["signature"])
    verify_key.verify(manifest(MODEL, "1.4.0", SHA, len(IMAGE)), signature)
    # The signature binds model, version, digest and size: replayed, it fails.
    for other in (
        manifest(MODEL, "1.4.1", SHA, len(IMAGE)),
        manifest("soil-v3", "1.4.0", SHA, len(IMAGE)),
        manifest(MODEL, "1.4.0", hashlib.sha256(b"other").hexdigest(), len(IMAGE)),
        manifest(MODEL, "1.4.0", SHA, len(IMAGE) + 1),
    ):
        with pytest.raises(nacl.exceptions.BadSignatureError):
            verify_key.verify(other, signature)

    listed = (await api.http.get("/api/v1/firmware", headers=admin)).json()["items"]
    assert [(i["version"], i["release_notes"], i["uploaded_by"]) for i in listed] == [
        ("1.4.0", "Faster reconnect", "admin")
    ]
    again = await upload(api, admin, "1.4.0")
    assert again.status_code == 409, again.text
    audit = (await api.http.get("/api/v1/audit", headers=admin)).json()["items"]
    assert any(
        e["action"] == "firmware.upload" and e["target_id"] == "soil-v2/1.4.0" for e in audit
    )


async def test_a_supplied_signature_must_come_from_a_trusted_key(
    api: Api, admin: dict[str, str]
) -> None:
    offline = Ed25519PrivateKey.generate()
    image = Image(MODEL, "2.0.0", SHA, len(IMAGE))
    good = sign(offline, image)

    untrusted = await upload(api, admin, "2.0.0", signature=good)
    assert untrusted.status_code == 422, untrusted.text
    assert "trusted key" in untrusted.json()["error"]["message"]

    public = base64.b64encode(raw_public(offline.public_key())).decode()
    api.reconfigure(
        firmware_trusted_keys=public, firmware_active_key=key_id_of(offline.public_key())
    )
    keys = (await api.http.get("/api/v1/firmware/keys")).json()["items"]
    assert {(k["key_id"], k["active"]) for k in keys} == {
        (key_id_of(offline.public_key()), True),
        (api.context.firmware_keys.own.key_id, False),
    }
    # The active key signs offline: an upload without a signature cannot be signed here.
    unsigned = await upload(api, admin, "2.0.0")
    assert unsigned.status_code == 422, unsigned.text
    # A signature of this image for another version is refused; the right one is kept.
    replayed = await upload(api, admin, "2.0.1", signature=good)
    assert replayed.status_code == 422, replayed.text
    tampered = await upload(api, admin, "2.0.0", data=IMAGE[:-1] + b"\0", signature=good)
    assert tampered.status_code == 422, tampered.text
    accepted = await upload(api, admin, "2.0.0", signature=good)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["key_id"] == key_id_of(offline.public_key())
    assert accepted.json()["signature"] == good

    garbage = await upload(api, admin, "2.0.2", signature="not base64!")
    assert garbage.status_code == 422, garbage.text


async def register(api: Api, headers: dict[str, str], device_id: str, model: str) -> str:
    answer = await api.http.post(
        "/api/v1/devices", headers=headers, json={"device_id": device_id, "device_type": model}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["mqtt"]["password"])


async def test_a_device_reached_by_a_rollout_downloads_its_image_by_ranges(
    api: Api, admin: dict[str, str], publisher: Publisher
) -> None:
    assert (await upload(api, admin, "1.4.0")).status_code == 201
    password = await register(api, admin, "field-1", MODEL)
    outsider = await register(api, admin, "field-2", MODEL)
    other_model = await register(api, admin, "pump-1", "pump-v1")
    created = await api.http.post(
        "/api/v1/rollouts",
        headers=admin,
        json={
            "firmware": {"device_model": MODEL, "version": "1.4.0"},
            "target": {"device_ids": ["field-1", "pump-1"]},
            "percentage": 100,
        },
    )
    assert created.status_code == 201, created.text
    rollout_id = created.json()["id"]
    auth = ("field-1", password)

    # Not told yet: the device may not have it.
    early = await api.http.get(f"/firmware/{MODEL}/1.4.0", auth=auth)
    assert early.status_code == 403, early.text
    async with api.pool.connection() as conn:
        await rollout_round(
            conn, publisher=publisher, topics=TopicScheme(), base_url="", now=datetime.now(UTC)
        )
    status = await api.http.get("/api/v1/devices/field-1/status", headers=admin)
    assert status.json()["pending_update"] is True

    meta = await api.http.get(f"/firmware/{MODEL}/latest", auth=auth)
    assert meta.status_code == 200, meta.text
    body = meta.json()
    assert (body["version"], body["sha256"], body["size_bytes"], body["rollout_id"]) == (
        "1.4.0",
        SHA,
        len(IMAGE),
        rollout_id,
    )
    assert body["binary_url"] == f"http://fieldline/firmware/{MODEL}/1.4.0/binary"
    url = f"/firmware/{MODEL}/1.4.0/binary"

    whole = await api.http.get(url, auth=auth)
    assert whole.status_code == 200
    assert whole.content == IMAGE
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"] == f'"{SHA}"'

    # Exactly the bytes asked for, across piece boundaries too.
    for first, last in ((0, 0), (100, 4095), (CHUNK_BYTES - 10, CHUNK_BYTES + 9)):
        part = await api.http.get(url, auth=auth, headers={"Range": f"bytes={first}-{last}"})
        assert part.status_code == 206, part.text
        assert part.content == IMAGE[first : last + 1]
        assert part.headers["content-range"] == f"bytes {first}-{last}/{len(IMAGE)}"
    tail = await api.http.get(url, auth=auth, headers={"Range": "bytes=-100"})
    assert tail.content == IMAGE[-100:]

    # A download cut after 300,000 bytes resumes from there and matches the sha256.
    held = whole.content[:300_000]
    rest = await api.http.get(url, auth=auth, headers={"Range": f"bytes={len(held)}-"})
    assert rest.status_code == 206
    assert hashlib.sha256(held + rest.content).hexdigest() == SHA

    outside = await api.http.get(url, auth=auth, headers={"Range": f"bytes={len(IMAGE)}-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{len(IMAGE)}"

    # Outside the target, another model, bad credentials, an unknown version.
    assert (await api.http.get(url, auth=("field-2", outsider))).status_code == 403
    assert (await api.http.get(url, auth=("pump-1", other_model))).status_code == 403
    assert (await api.http.get(url, auth=("field-1", "wrong"))).status_code == 401
    assert (await api.http.get(url)).status_code == 401
    assert (await api.http.get(f"/firmware/{MODEL}/9.9.9", auth=auth)).status_code == 404
    assert (
        await api.http.get(f"/firmware/{MODEL}/latest", auth=("field-2", outsider))
    ).status_code == 404


async def test_lists_come_a_page_at_a_time(api: Api, admin: dict[str, str]) -> None:
    for n in range(5):
        assert (await upload(api, admin, f"3.0.{n}", data=b"x" * (n + 1))).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.http.get("/api/v1/firmware", headers=admin, params=params)).json()
        seen += [item["version"] for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [f"3.0.{n}" for n in reversed(range(5))]  # newest first, each once
    bad = await api.http.get("/api/v1/firmware", headers=admin, params={"cursor": "nonsense"})
    assert bad.status_code in (400, 422)


async def test_a_signing_key_made_by_openssl_is_used_from_its_file(
    api: Api, admin: dict[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "release.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key_file)], check=True
    )
    raw_public_key = subprocess.run(
        ["openssl", "pkey", "-in", str(key_file), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout[-32:]  # the DER SubjectPublicKeyInfo ends with the 32 raw bytes
    api.use(
        ApiContext.build(
            api.context.settings.model_copy(update={"firmware_signing_key_file": key_file}),
            pool=api.pool,
            broker=api.broker,
            metrics=api.context.metrics,
        )
    )
    (key,) = (await api.http.get("/api/v1/firmware/keys")).json()["items"]
    assert base64.b64decode(key["public_key"]) == raw_public_key
    answer = await upload(api, admin, "5.0.0")
    assert answer.status_code == 201, answer.text
    nacl.signing.VerifyKey(raw_public_key).verify(
        manifest(MODEL, "5.0.0", SHA, len(IMAGE)), base64.b64decode(answer.json()["signature"])
    )


def test_keys_that_cannot_work_refuse_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="FIELDLINE_FIRMWARE_TRUSTED_KEYS"):
        Settings(data_dir=tmp_path, firmware_trusted_keys="bm90IGEga2V5")  # "not a key"
    settings = Settings(data_dir=tmp_path, firmware_active_key="0123456789abcdef")
    with pytest.raises(KeyConfigurationError, match="none of the trusted keys"):
        FirmwareKeys(settings).check()
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyConfigurationError, match="signing key"):
        FirmwareKeys(Settings(data_dir=tmp_path, firmware_signing_key_file=broken)).check()
    FirmwareKeys(Settings(data_dir=tmp_path)).check()  # generated once, kept private
    generated = tmp_path / "secrets" / "firmware_signing_key.pem"
    assert generated.stat().st_mode & 0o077 == 0
