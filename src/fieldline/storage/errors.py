"""Storage outcomes the API turns into HTTP statuses."""


class AlreadyExistsError(Exception):
    """A resource with this identifier exists."""


class NotFoundError(Exception):
    """No resource with this identifier."""


class InUseError(Exception):
    """The resource is still referenced and cannot be deleted."""


class GroupNotFoundError(NotFoundError):
    """A device was to join a group that does not exist."""
