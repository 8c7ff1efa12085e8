"""Opaque keyset cursors for list calls (`{"items", "next_cursor"}`)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Generic, TypeVar

import orjson

T = TypeVar("T")


class InvalidCursorError(ValueError):
    """A cursor that this server did not hand out."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*key: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[object] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursorError("invalid cursor") from exc
    if not isinstance(key, list) or len(key) != arity:
        raise InvalidCursorError("invalid cursor")
    return key
