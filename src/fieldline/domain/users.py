"""Users and what each role may do (SPEC §3)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"

    def includes(self, required: Role) -> bool:
        """admin ⊇ operator ⊇ viewer."""
        return _RANK[self] >= _RANK[required]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: Role
    created_at: datetime
    # Named by every token issued to the user; raised to end them all (api/tokens.py).
    token_version: int


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    user_id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
