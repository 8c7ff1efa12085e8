"""Firmware images (SPEC §5, docs/ota.md): uploaded and signed by users, fetched by devices.

An upload is spooled to disk by the form parser, hashed, signed (or its supplied
signature verified) and written to PostgreSQL in pieces, in one transaction. Devices
fetch the metadata of the update a rollout has brought them and the binary, with HTTP
Range so that a cut download resumes; every piece is read from the database once per
API process and then served from memory (ota/pieces.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from fieldline.api.context import ApiContext
from fieldline.api.deps import Admin, Context, DbConn, Operator, Viewer
from fieldline.api.device_auth import AnyDevice
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.domain.firmware import MODEL_PATTERN, VERSION_PATTERN, Image, SignatureError
from fieldline.ota.keys import KeyConfigurationError
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store
from fieldline.storage import firmware as firmware_store
from fieldline.storage import rollouts as rollout_store
from fieldline.storage.firmware import CHUNK_BYTES, Firmware

router = APIRouter(tags=["firmware"])

ModelPath = Annotated[str, Path(pattern=MODEL_PATTERN, max_length=64)]
VersionPath = Annotated[str, Path(pattern=VERSION_PATTERN, max_length=64)]
LATEST = "latest"
HASH_READ_BYTES = 1024 * 1024


class FirmwareOut(BaseModel):
    device_model: str
    version: str
    sha256: str = Field(description="Hex sha256 of the image")
    size_bytes: int
    signature: str = Field(description="Base64 Ed25519 signature of the manifest (docs/ota.md)")
    key_id: str = Field(description="The key that made the signature")
    release_notes: str
    uploaded_at: datetime
    uploaded_by: str | None

    @classmethod
    def of(cls, firmware: Firmware) -> FirmwareOut:
        return cls.model_validate(firmware, from_attributes=True)


class FirmwareList(BaseModel):
    items: list[FirmwareOut]
    next_cursor: str | None


class KeyOut(BaseModel):
    key_id: str
    public_key: str = Field(description="Base64 of the 32 raw bytes of the Ed25519 public key")
    active: bool = Field(description="The key new images are signed with")


class KeyList(BaseModel):
    items: list[KeyOut]


class UpdateOut(BaseModel):
    """What a device may install (SPEC §5)."""

    device_model: str
    version: str
    binary_url: str
    sha256: str
    signature: str
    key_id: str
    size_bytes: int
    uploaded_at: datetime
    required: bool
    rollout_id: int
    allow_downgrade: bool


_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"description": "this model already has this version"},
    413: {"description": "the image is over FIELDLINE_FIRMWARE_MAX_BYTES"},
    422: {
        "description": "a bad field, a signature no trusted key made, or no signature while "
        "the active key signs offline"
    },
}
_DEVICE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "unknown or disabled device, wrong password, or a bad device token"},
    403: {"description": "a device of another model, or one no running rollout has reached"},
    404: {"description": "no such model or version (for `latest`: no update for this device)"},
}


@router.post(
    "/api/v1/firmware", status_code=201, response_model=FirmwareOut, responses=_UPLOAD_ERRORS
)
async def upload_firmware(
    user: Operator,
    conn: DbConn,
    context: Context,
    device_model: Annotated[str, Form(pattern=MODEL_PATTERN, max_length=64)],
    version: Annotated[str, Form(pattern=VERSION_PATTERN, max_length=64)],
    file: Annotated[UploadFile, File(description="The image")],
    release_notes: Annotated[str, Form(max_length=10_000)] = "",
    signature: Annotated[str | None, Form(max_length=200)] = None,
) -> FirmwareOut:
    """Store an image for a device model: signed by the platform's active key, or carrying
    a `signature` made elsewhere by a trusted key (checked here; a bad one is 422)."""
    # Hashing 64 MB takes a tenth of a second: off the event loop.
    sha256, size = await asyncio.to_thread(_digest, file.file, context.settings.firmware_max_bytes)
    image = Image(device_model, version, sha256, size)
    keys = context.firmware_keys
    try:
        signed = keys.verify(signature, image) if signature else keys.sign(image)
    except (SignatureError, KeyConfigurationError) as exc:
        raise ApiError(422, str(exc), code="bad_signature") from exc
    file.file.seek(0)
    async with conn.transaction():
        firmware = await firmware_store.create(
            conn,
            image,
            source=file.file,
            signature=signed.signature,
            key_id=signed.key_id,
            release_notes=release_notes,
            uploaded_by=user.username,
        )
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="firmware.upload",
            target_type="firmware",
            target_id=f"{device_model}/{version}",
            detail={"sha256": sha256, "size_bytes": size, "key_id": signed.key_id},
        )
    return FirmwareOut.of(firmware)


def _digest(source: BinaryIO, limit: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    source.seek(0)
    while block := source.read(HASH_READ_BYTES):
        size += len(block)
        if size > limit:
            raise ApiError(413, f"the image is over {limit} bytes (FIELDLINE_FIRMWARE_MAX_BYTES)")
        digest.update(block)
    return digest.hexdigest(), size


@router.get("/api/v1/firmware", response_model=FirmwareList)
async def list_firmware(
    _: Viewer,
    conn: DbConn,
    device_model: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> FirmwareList:
    """Images (or one model's), newest first."""
    page = await firmware_store.list_firmware(conn, device_model, limit=limit, cursor=cursor)
    return FirmwareList(
        items=[FirmwareOut.of(item) for item in page.items], next_cursor=page.next_cursor
    )


@router.get("/api/v1/firmware/keys", response_model=KeyList)
async def firmware_keys(context: Context) -> KeyList:
    """The public keys devices trust, the active one marked. Public: no authentication."""
    keys = context.firmware_keys
    active = keys.active_key_id
    return KeyList(
        items=[
            KeyOut(key_id=key.key_id, public_key=key.public_base64(), active=key.key_id == active)
            for key in keys.trusted
        ]
    )


@router.get(
    "/api/v1/firmware/{device_model}/{version}",
    response_model=FirmwareOut,
    responses={404: {"description": "no such image"}},
)
async def get_firmware(
    device_model: ModelPath, version: VersionPath, _: Viewer, conn: DbConn
) -> FirmwareOut:
    return FirmwareOut.of(await firmware_store.get(conn, device_model, version))


@router.delete(
    "/api/v1/firmware/{device_model}/{version}",
    status_code=204,
    responses={
        404: {"description": "no such image"},
        409: {"description": "a running or paused rollout uses it"},
    },
)
async def delete_firmware(
    device_model: ModelPath, version: VersionPath, user: Admin, conn: DbConn
) -> Response:
    """Remove an image and the finished rollouts that used it."""
    async with conn.transaction():
        firmware = await firmware_store.delete(conn, device_model, version)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="firmware.delete",
            target_type="firmware",
            target_id=f"{device_model}/{version}",
            detail={"sha256": firmware.sha256},
        )
    return Response(status_code=204)


async def _update_for(
    conn: DbConn, device: AnyDevice, device_model: str, version: str
) -> tuple[Firmware, rollout_store.OpenUpdate]:
    """The image and the rollout that brought it to this device; 404 for an image that
    does not exist, 403 for one this device may not have."""
    if version == LATEST:
        record = await device_store.get_device(conn, device.device_id)
        if not (await firmware_store.list_firmware(conn, device_model, limit=1)).items:
            raise ApiError(404, f"no firmware of model {device_model!r}")
        _same_model(device.device_id, record.device_type, device_model)
        update = await rollout_store.open_update(conn, device.device_id)
        if update is None:
            raise ApiError(404, f"no update for device {device.device_id!r}")
        return await firmware_store.get_by_id(conn, update.firmware_id), update
    granted = await rollout_store.grant(conn, device.device_id, device_model, version)
    if granted is None:  # deleted since it authenticated
        raise ApiError(401, f"device {device.device_id!r} no longer exists")
    if granted.firmware is None:
        raise ApiError(404, f"no firmware {version} of {device_model}")
    _same_model(device.device_id, granted.device_type, device_model)
    if granted.update is None:
        raise ApiError(
            403, f"no running rollout of {version} has reached device {device.device_id!r}"
        )
    return Firmware.from_row(granted.firmware), granted.update


def _same_model(device_id: str, device_type: str, device_model: str) -> None:
    if device_type != device_model:
        raise ApiError(
            403, f"device {device_id!r} is of model {device_type!r}, not {device_model!r}"
        )


def _base_url(context: ApiContext, request: Request) -> str:
    return (context.settings.public_url or str(request.base_url)).rstrip("/")


@router.get(
    "/firmware/{device_model}/{version}",
    response_model=UpdateOut,
    responses=_DEVICE_ERRORS,
    tags=["device firmware"],
)
async def device_update(
    device_model: ModelPath,
    version: VersionPath,
    device: AnyDevice,
    conn: DbConn,
    context: Context,
    request: Request,
) -> UpdateOut:
    """The update a rollout brought this device (`latest`), or one version of it."""
    firmware, update = await _update_for(conn, device, device_model, version)
    return update_out(firmware, update, _base_url(context, request))


def update_out(firmware: Firmware, update: rollout_store.OpenUpdate, base_url: str) -> UpdateOut:
    return UpdateOut(
        device_model=firmware.device_model,
        version=firmware.version,
        binary_url=f"{base_url}/firmware/{firmware.device_model}/{firmware.version}/binary",
        sha256=firmware.sha256,
        signature=firmware.signature,
        key_id=firmware.key_id,
        size_bytes=firmware.size_bytes,
        uploaded_at=firmware.uploaded_at,
        required=update.required,
        rollout_id=update.rollout_id,
        allow_downgrade=update.allow_downgrade,
    )


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a `Range` header asks for; None for the whole image.

    One range only (several in one request are answered whole, as RFC 9110 allows);
    ApiError 416 when it lies outside the image.
    """
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # not a form we serve in part: the whole image
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - length, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        f"the range lies outside the image of {size} bytes",
        code="range_not_satisfiable",
        headers={"Content-Range": f"bytes */{size}"},
    )


@router.get(
    "/firmware/{device_model}/{version}/binary",
    response_class=StreamingResponse,
    responses={
        **_DEVICE_ERRORS,
        200: {"content": {"application/octet-stream": {}}, "description": "the whole image"},
        206: {"content": {"application/octet-stream": {}}, "description": "the range asked"},
        416: {"description": "the range lies outside the image"},
    },
    tags=["device firmware"],
)
async def device_binary(
    device_model: ModelPath,
    version: VersionPath,
    device: AnyDevice,
    context: Context,
    request: Request,
) -> StreamingResponse:
    """The image, whole or the one byte range asked for (`Range: bytes=a-b`), to resume."""
    async with context.pool.connection() as conn:
        firmware, _ = await _update_for(conn, device, device_model, version)
    etag = f'"{firmware.sha256}"'
    size = firmware.size_bytes
    wanted = requested_range(request.headers.get("range"), size)
    if_range = request.headers.get("if-range")
    if wanted is not None and if_range is not None and if_range != etag:
        wanted = None  # the device holds part of another image: it gets this one whole
    start, end = wanted if wanted is not None else (0, size - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Length": str(max(end - start + 1, 0)),
        "Cache-Control": "private, max-age=0",
    }
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        _stream(context, firmware.id, start, end),
        status_code=206 if wanted is not None else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


async def _stream(
    context: ApiContext, firmware_id: int, start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes `start`..`end` a piece at a time; a connection is held only to read a piece."""
    pool, cache = context.pool, context.firmware_pieces
    for seq in range(start // CHUNK_BYTES, end // CHUNK_BYTES + 1):

        async def read(seq: int = seq) -> bytes:
            async with pool.connection() as conn:
                return await firmware_store.read_piece(conn, firmware_id, seq)

        piece = await cache.get((firmware_id, seq), read)
        base = seq * CHUNK_BYTES
        yield piece[max(start - base, 0) : min(end - base, len(piece) - 1) + 1]
