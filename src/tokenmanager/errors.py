"""The product's exception tree. Services raise these; the HTTP edge maps them to one JSON shape
and the CLI to exit codes. Messages are safe to show: they never carry a secret.

    TokenManagerError
    ├── ConfigurationError      settings or data dir unusable (exit 5 in the CLI)
    ├── SchemaNotReadyError     database not migrated to head
    ├── NotFoundError           404 — also used for objects the caller may not see
    ├── ConflictError           409 — duplicate team id, route prefix, username, ...
    ├── InvalidInputError       422 — a value the schema allows but the domain does not
    └── PermissionDeniedError   403 — the caller's role cannot do this at all
"""

from __future__ import annotations


class TokenManagerError(Exception):
    """Base class; `message` is meant for people and never contains secrets."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(TokenManagerError):
    pass


class SchemaNotReadyError(TokenManagerError):
    pass


class NotFoundError(TokenManagerError):
    pass


class ConflictError(TokenManagerError):
    pass


class InvalidInputError(TokenManagerError):
    """`field` names the offending input, e.g. "upstream_url"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class PermissionDeniedError(TokenManagerError):
    pass
