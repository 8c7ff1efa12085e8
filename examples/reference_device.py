"""A reference device for fieldline, in one file: what firmware has to do, in Python.

It provisions itself with a provisioning key (zero-touch) the first time and keeps
its credentials in a file, connects over MQTT (TLS when fieldline gave it a CA),
publishes readings with message ids and timestamps, applies the configuration
fieldline publishes and reports its version, answers commands, and installs signed
firmware updates. Port it to your platform; docs/devices.md explains each step.

    python examples/reference_device.py --api http://127.0.0.1:8000 \\
        --key-id pk_... --key-secret ... --device-id greenhouse-7

Needs `gmqtt`, `httpx` and `cryptography` (all come with fieldline).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import signal
import ssl
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import gmqtt
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from gmqtt.mqtt.constants import MQTTv311

MODEL = "reference"  # the device_type it provisions with: firmware images are per model
CHUNK = 64 * 1024  # bytes per Range request of a firmware download


def provision(api: str, key_id: str, key_secret: str, device_id: str) -> dict[str, Any]:
    """POST /provision, signed: hex HMAC-SHA256 of "{timestamp}.{body}" with the key's secret."""
    body = json.dumps({"device_id": device_id, "device_type": MODEL}).encode()
    timestamp = str(int(time.time()))
    signature = hmac.new(key_secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    answer = httpx.post(
        f"{api}/provision",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Key-Id": key_id,
            "X-Timestamp": timestamp,
            "X-Signature": signature.hexdigest(),
        },
        timeout=30,
    )
    if answer.status_code != 201:
        raise SystemExit(f"provisioning refused: {answer.status_code} {answer.text}")
    credentials: dict[str, Any] = answer.json()
    return credentials


def fetch_keys(api: str) -> dict[str, Ed25519PublicKey]:
    """The platform's firmware signing keys, by key id (public keys: no credentials)."""
    keys = {}
    for item in httpx.get(f"{api}/api/v1/firmware/keys", timeout=30).json()["items"]:
        raw = base64.b64decode(item["public_key"])
        keys[hashlib.sha256(raw).hexdigest()[:16]] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))  # "ref-1.10" -> (1, 10)


class Device:
    def __init__(self, credentials: dict[str, Any], *, api: str, interval: float) -> None:
        self.id = credentials["username"]
        self.credentials = credentials
        self.api = api
        self.interval = interval
        self.config_version: int | None = None
        self.answers: dict[str, bytes] = {}  # QoS 1 may deliver a command twice
        self.firmware = "ref-1.0"  # keep it in flash: it is what the new image changes
        self.keys = fetch_keys(api)
        self.updates_tried: set[str] = set()  # the retained offer comes at every connect
        self.client = gmqtt.Client(self.id)

    async def connect(self) -> None:
        self.client = gmqtt.Client(
            self.id,  # the client id must be the device id: the broker refuses any other
            will_message=gmqtt.Message(
                f"devices/{self.id}/status", b'{"status": "offline"}', qos=1
            ),
        )
        self.client.set_auth_credentials(self.id, self.credentials["password"])
        self.client.on_connect = self.on_connect
        self.client.on_message = self.on_message
        tls: ssl.SSLContext | bool = False
        port = self.credentials["port"]
        if self.credentials.get("ca_certificate") and self.credentials.get("tls_port"):
            with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as ca:
                ca.write(self.credentials["ca_certificate"])
            tls = ssl.create_default_context(cafile=ca.name)
            port = self.credentials["tls_port"]
        # MQTT 3.1.1 works with every broker fieldline runs (amqtt speaks nothing newer).
        await self.client.connect(
            self.credentials["host"], port, ssl=tls, keepalive=30, version=MQTTv311
        )

    def on_connect(self, client: gmqtt.Client, flags: int, rc: int, props: Any) -> None:
        client.subscribe(f"devices/{self.id}/config", qos=1)
        client.subscribe(f"devices/{self.id}/commands", qos=1)
        client.subscribe(f"devices/{self.id}/ota", qos=1)
        self.report_status()

    def report_status(self) -> None:
        status: dict[str, Any] = {"status": "online", "firmware_version": self.firmware}
        if self.config_version is not None:
            status["config_version"] = self.config_version
        self.client.publish(f"devices/{self.id}/status", json.dumps(status), qos=1)

    def on_message(self, client: gmqtt.Client, topic: str, payload: bytes, qos: int, p: Any) -> int:
        if topic.endswith("/ota"):
            # An empty payload clears the offer; a version running or tried is no news.
            offer = json.loads(payload) if payload else None
            if offer and offer["version"] not in (self.firmware, *self.updates_tried):
                self.updates_tried.add(offer["version"])
                asyncio.get_running_loop().create_task(self.update(offer))
            return 0
        message = json.loads(payload)
        if topic.endswith("/config"):
            # Apply what you understand, then report the version you applied.
            interval = message["config"].get("interval_s")
            if isinstance(interval, int | float) and interval > 0:
                self.interval = float(interval)
            self.config_version = message["version"]
            self.report_status()
        elif topic.endswith("/commands"):
            command_id = message["command_id"]
            if command_id not in self.answers:
                ok = message["name"] in ("ping", "reboot")
                result = {"pong": True} if ok else {"error": "unknown command"}
                self.answers[command_id] = json.dumps(
                    {
                        "command_id": command_id,
                        "status": "succeeded" if ok else "failed",
                        "result": result,
                    }
                ).encode()
            client.publish(f"devices/{self.id}/commands/result", self.answers[command_id], qos=1)
        return 0

    def progress(self, offer: dict[str, Any], state: str, percent: int, error: str = "") -> None:
        report = {"rollout_id": offer["rollout_id"], "version": offer["version"], "state": state}
        report |= {"progress": percent, "error": error or None}
        self.client.publish(f"devices/{self.id}/ota/progress", json.dumps(report), qos=1)

    async def update(self, offer: dict[str, Any]) -> None:
        """Download with Range (resuming after a cut), check sha256 then the signature,
        install, reboot into the new version. Every step is reported."""
        older = version_key(offer["version"]) < version_key(self.firmware)
        if older and not offer.get("allow_downgrade"):
            self.progress(offer, "failed", 0, "downgrade refused")
            return
        size, image, failures = offer["size_bytes"], bytearray(), 0
        auth = (self.id, self.credentials["password"])
        async with httpx.AsyncClient(base_url=self.api, auth=auth, timeout=30) as http:
            while len(image) < size and failures < 5:
                wanted = f"bytes={len(image)}-{min(len(image) + CHUNK, size) - 1}"
                try:
                    async with http.stream(
                        "GET", offer["binary_url"], headers={"Range": wanted}
                    ) as answer:
                        answer.raise_for_status()
                        async for piece in answer.aiter_bytes():
                            image += piece  # kept even if the link drops mid-answer
                    failures = 0
                except httpx.HTTPError:
                    failures += 1  # ask again from the bytes held, not from the start
                    await asyncio.sleep(2 * failures)
                self.progress(offer, "downloading", len(image) * 100 // max(size, 1))
        if len(image) < size:
            self.progress(offer, "failed", 0, "download failed")
            return
        self.progress(offer, "downloaded", 100)
        if hashlib.sha256(image).hexdigest() != offer["sha256"] or len(image) != size:
            self.progress(offer, "failed", 100, "sha256 mismatch")
            return
        if offer["key_id"] not in self.keys:
            self.keys = await asyncio.to_thread(fetch_keys, self.api)  # keys rotate
        manifest = f"fieldline-fw-v1\n{MODEL}\n{offer['version']}\n{offer['sha256']}\n{size}"
        try:
            key = self.keys[offer["key_id"]]
            key.verify(base64.b64decode(offer["signature"]), manifest.encode())
        except (KeyError, ValueError, InvalidSignature):
            self.progress(offer, "failed", 100, "bad signature")
            return
        self.progress(offer, "installing", 100)  # write the image to the spare slot here
        self.progress(offer, "installed", 100)
        # Reboot: go offline, come back running the new image and say so in `status`.
        self.firmware = offer["version"]
        await self.client.disconnect()
        await asyncio.sleep(1)
        await self.connect()

    def publish_reading(self) -> None:
        reading = {
            "message_id": str(uuid.uuid4()),  # makes redelivery harmless
            "timestamp": int(time.time() * 1000),
            "sensors": {"temperature": round(random.uniform(18, 24), 2)},  # noqa: S311
        }
        if self.client.is_connected:  # not while rebooting
            self.client.publish(f"devices/{self.id}/telemetry", json.dumps(reading), qos=1)


def credentials_for(args: argparse.Namespace) -> dict[str, Any]:
    """Provision once; afterwards the stored credentials are the device's identity."""
    store = Path(args.credentials or f"{args.device_id}.credentials.json")
    if store.exists():
        stored: dict[str, Any] = json.loads(store.read_text())
        return stored
    credentials = provision(args.api, args.key_id, args.key_secret, args.device_id)
    store.write_text(json.dumps(credentials))
    store.chmod(0o600)
    return credentials


async def main(args: argparse.Namespace) -> None:
    device = Device(credentials_for(args), api=args.api, interval=args.interval)
    await device.connect()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        device.publish_reading()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=device.interval)
    device.client.publish(f"devices/{device.id}/status", b'{"status": "offline"}', qos=1)
    await device.client.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--key-secret", required=True)
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--credentials", help="where to keep the credentials once provisioned")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between readings")
    asyncio.run(main(parser.parse_args()))
