"""User operations every door shares (API, CLI, first start), with the one password
policy; they raise domain errors, not HTTP ones."""

from fieldline.users.accounts import (
    ADMIN_USERNAME,
    SelfLockoutError,
    change_own_password,
    create_user,
    delete_user,
    ensure_admin,
    record_user_change,
    update_user,
)
from fieldline.users.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    WeakPasswordError,
    check_password,
    hash_password,
)

__all__ = [
    "ADMIN_USERNAME",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "SelfLockoutError",
    "WeakPasswordError",
    "change_own_password",
    "check_password",
    "create_user",
    "delete_user",
    "ensure_admin",
    "hash_password",
    "record_user_change",
    "update_user",
]
