"""EMQX 5's HTTP authenticator and authorizer, answered from the device registry.

The contract followed, from EMQX's documentation and source:

- Authentication ("Use HTTP Service", docs.emqx.com/en/emqx/latest/access-control/authn/http.html;
  emqx/emqx apps/emqx_auth_http/src/emqx_authn_http.erl): a 200 answer with a JSON body
  `{"result": "allow" | "deny" | "ignore", "is_superuser": bool}`. `allow` accepts the
  client (a superuser then skips authorization), `deny` refuses it, `ignore` hands it to the
  next authenticator in the chain and, when there is none, refuses it. Any other status is
  taken as `ignore`.
- Authorization (docs.emqx.com/en/emqx/latest/access-control/authz/http.html;
  apps/emqx_auth_http/src/emqx_authz_http.erl): a 200 answer `{"result": "allow" | "deny"}`;
  `deny` is final, and any other status counts as no match, which `no_match = deny` refuses.
- The request bodies are EMQX templates whose placeholders are all rendered as strings
  (`${action}` is `publish` or `subscribe`; `${qos}` and `${retain}` are unused here);
  EMQX posts JSON, or form fields when the configured content type asks for them.

Answers: a device (username = device id) is allowed when it exists, is enabled, its
password verifies and its client id is its device id (another would let it take over
that client's session); otherwise it is denied, so no later authenticator can let it in.
An unknown username is ignored, so EMQX's own database can still hold other users, except
under one of fieldline's own client ids (`fieldline-...`: ingest's, the publishers'),
which only fieldline's service account may use: denied. The service account is a
superuser. A device may publish to its own uplink topics and subscribe to its own downlink
topics, exactly (a wildcard filter never equals one of them); nothing else is allowed.

EMQX proves itself with `Authorization: Bearer <FIELDLINE_EMQX_WEBHOOK_SECRET>`; without
that setting these endpoints do not exist (404).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Annotated, Literal, TypeVar
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from fieldline.api.context import ApiContext
from fieldline.api.deps import Context
from fieldline.api.errors import ApiError
from fieldline.domain.devices import DeviceAccess, is_reserved_client_id, is_valid_device_id
from fieldline.security.passwords import verify_encoded
from fieldline.storage import devices as device_store
from fieldline.storage.errors import NotFoundError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/emqx", include_in_schema=False)

_bearer = HTTPBearer(auto_error=False)
_FORM = "application/x-www-form-urlencoded"

Result = Literal["allow", "deny", "ignore"]


class AuthnRequest(BaseModel):
    username: str
    password: str
    clientid: str = ""
    peerhost: str = ""


class AuthzRequest(BaseModel):
    username: str
    topic: str
    action: Literal["publish", "subscribe"]
    clientid: str = ""


class AuthnAnswer(BaseModel):
    result: Result
    is_superuser: bool


class AuthzAnswer(BaseModel):
    result: Literal["allow", "deny"]


async def _check_caller(
    context: Context,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    secret = context.settings.emqx_webhook_secret
    if secret is None:
        raise ApiError(404, "the EMQX endpoints are off: FIELDLINE_EMQX_WEBHOOK_SECRET is unset")
    presented = bearer.credentials.encode() if bearer is not None else b""
    if not hmac.compare_digest(presented, secret.get_secret_value().encode()):
        raise ApiError(
            401,
            "EMQX must send Authorization: Bearer <FIELDLINE_EMQX_WEBHOOK_SECRET>",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def _fields(request: Request, _: Annotated[None, Depends(_check_caller)]) -> object:
    """The request body as EMQX rendered it: JSON, or form fields."""
    body = await request.body()
    media_type = request.headers.get("content-type", "application/json").partition(";")[0]
    media_type = media_type.strip().lower()
    if media_type == _FORM:
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, "the body is not valid form data") from exc
    if media_type != "application/json":
        raise ApiError(415, f"send application/json or {_FORM}, not {media_type}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from exc


Fields = Annotated[object, Depends(_fields)]
Model = TypeVar("Model", bound=BaseModel)


def _parse(model: type[Model], fields: object) -> Model:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        # Reported like any other invalid body: 422 with the failing fields.
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc


async def _device_access(context: ApiContext, username: str) -> DeviceAccess | None:
    if not is_valid_device_id(username):
        return None  # never a device, and not worth a query
    # A connection of its own, returned before the slow password check.
    async with context.pool.connection() as conn:
        try:
            return await device_store.device_access(conn, username)
        except NotFoundError:
            return None


def _is_service(context: ApiContext, username: str) -> bool:
    service = context.settings.broker_service_username
    return service is not None and username == service


@router.post("/authn", response_model=AuthnAnswer)
async def authenticate(fields: Fields, context: Context) -> AuthnAnswer:
    """May this MQTT client connect? Called by EMQX on every CONNECT."""
    request = _parse(AuthnRequest, fields)
    if _is_service(context, request.username):
        expected = context.settings.broker_service_password
        ok = expected is not None and hmac.compare_digest(
            request.password.encode(), expected.get_secret_value().encode()
        )
        return _authn(request, "allow" if ok else "deny", is_superuser=ok)
    if is_reserved_client_id(request.clientid):
        return _authn(request, "deny", why="a client id only fieldline's service account uses")
    device = await _device_access(context, request.username)
    if device is None:
        return _authn(request, "ignore")
    if request.clientid != device.device_id:
        return _authn(request, "deny", why=_wrong_client_id(request.clientid))
    if not device.enabled:
        return _authn(request, "deny", why="device disabled")
    # PBKDF2 is deliberately slow; keep it off the event loop.
    verified = await asyncio.to_thread(verify_encoded, device.secret_hash, request.password)
    return _authn(request, "allow" if verified else "deny", why="bad password")


def _wrong_client_id(clientid: str) -> str:
    if not clientid:
        return "EMQX sent no clientid: add clientid = ${clientid} to the request body"
    return "a device's client id must be its device id"


def _authn(
    request: AuthnRequest, result: Result, *, is_superuser: bool = False, why: str = ""
) -> AuthnAnswer:
    if result == "deny":
        log.info(
            "emqx authentication denied",
            extra={
                "username": request.username,
                "clientid": request.clientid,
                "peerhost": request.peerhost,
                "reason": why,
            },
        )
    return AuthnAnswer(result=result, is_superuser=is_superuser)


@router.post("/authz", response_model=AuthzAnswer)
async def authorize(fields: Fields, context: Context) -> AuthzAnswer:
    """May this client publish to or subscribe to this topic? Called by EMQX per action."""
    request = _parse(AuthzRequest, fields)
    if _is_service(context, request.username):
        return AuthzAnswer(result="allow")  # a superuser is not even asked; kept consistent
    device = await _device_access(context, request.username)
    if device is None or not device.enabled or request.clientid != device.device_id:
        allowed = False
    else:
        topics = context.settings.topics
        granted = (
            topics.device_publishes(device.device_id)
            if request.action == "publish"
            else topics.device_subscribes(device.device_id)
        )
        allowed = request.topic in granted
    if not allowed:
        # Debug, not info: a misbehaving device can be refused many times a second.
        log.debug(
            "emqx authorization denied",
            extra={
                "username": request.username,
                "clientid": request.clientid,
                "action": request.action,
                "topic": request.topic,
            },
        )
    return AuthzAnswer(result="allow" if allowed else "deny")
