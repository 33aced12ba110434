"""Route management (admins change, everyone signed in reads). The upstream credential is
encrypted before it is stored and is write-only: reads show whether it is set and a hint.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.crypto import Keyring
from tokenmanager.errors import ConflictError, InvalidInputError, NotFoundError
from tokenmanager.llm.models import Provider
from tokenmanager.routes import validation
from tokenmanager.routes.models import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_TOTAL_TIMEOUT_S,
    Route,
    UpstreamCredential,
)
from tokenmanager.ssrf import ForbiddenUpstreamError, UpstreamPolicy
from tokenmanager.storage import audit as audit_sql
from tokenmanager.storage import routes as routes_sql
from tokenmanager.storage.database import Database

UPDATABLE_FIELDS = frozenset(
    {
        "path_prefix",
        "upstream_url",
        "required_scopes",
        "upstream_auth_header",
        "upstream_auth_query_param",
        "upstream_auth_value",
        "connect_timeout_s",
        "read_timeout_s",
        "total_timeout_s",
        "is_enabled",
        "description",
        "provider",
        "include_stream_usage",
    }
)


def audit_view(route: Route) -> dict[str, Any]:
    view = asdict(route)
    view["provider"] = route.provider.value if route.provider else None
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in view.items()}


def decrypt_credential(row: sa.Row[Any], keyring: Keyring) -> UpstreamCredential | None:
    """The plaintext credential of a route row (for the gateway), or None if none is set."""
    if row.upstream_auth_value_encrypted is None:
        return None
    return UpstreamCredential(
        header=row.upstream_auth_header,
        query_param=row.upstream_auth_query_param,
        value=keyring.decrypt(row.upstream_auth_value_encrypted),
    )


class RouteService:
    def __init__(
        self, database: Database, keyring: Keyring, upstream_policy: UpstreamPolicy
    ) -> None:
        self._db = database
        self._keyring = keyring
        self._upstream_policy = upstream_policy

    async def _check_reachable(self, upstream_url: str) -> None:
        """The SSRF guard's save-time check (it runs again at connect time)."""
        parts = urlsplit(upstream_url)
        assert parts.hostname is not None  # check_upstream_url made sure
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            await self._upstream_policy.check_host(parts.hostname, port)
        except ForbiddenUpstreamError as exc:
            raise InvalidInputError("upstream_url", str(exc)) from None

    def _to_route(self, row: sa.Row[Any]) -> Route:
        credential = self.credential_of(row)
        return Route(
            id=row.id,
            path_prefix=row.path_prefix,
            upstream_url=row.upstream_url,
            required_scopes=tuple(row.required_scopes),
            upstream_auth_header=row.upstream_auth_header,
            upstream_auth_query_param=row.upstream_auth_query_param,
            upstream_auth_value_hint=credential.hint if credential else None,
            connect_timeout_s=row.connect_timeout_s,
            read_timeout_s=row.read_timeout_s,
            total_timeout_s=row.total_timeout_s,
            is_enabled=row.is_enabled,
            description=row.description,
            created_at=row.created_at,
            updated_at=row.updated_at,
            provider=Provider(row.provider) if row.provider else None,
            include_stream_usage=row.include_stream_usage,
        )

    def credential_of(self, row: sa.Row[Any]) -> UpstreamCredential | None:
        return decrypt_credential(row, self._keyring)

    def _checked_values(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Validated column values from API-level fields (the credential value encrypted)."""
        validation.check_credential(
            fields.get("upstream_auth_header"),
            fields.get("upstream_auth_query_param"),
            fields.get("upstream_auth_value"),
        )
        validation.check_timeouts(
            fields["connect_timeout_s"], fields["read_timeout_s"], fields["total_timeout_s"]
        )
        value = fields.get("upstream_auth_value")
        provider = validation.check_provider(fields.get("provider"))
        return {
            "path_prefix": validation.check_path_prefix(fields["path_prefix"]),
            "upstream_url": validation.check_upstream_url(fields["upstream_url"]),
            "required_scopes": list(validation.check_required_scopes(fields["required_scopes"])),
            "upstream_auth_header": fields.get("upstream_auth_header"),
            "upstream_auth_query_param": fields.get("upstream_auth_query_param"),
            "upstream_auth_value_encrypted": self._keyring.encrypt(value) if value else None,
            "connect_timeout_s": float(fields["connect_timeout_s"]),
            "read_timeout_s": float(fields["read_timeout_s"]),
            "total_timeout_s": float(fields["total_timeout_s"]),
            "is_enabled": bool(fields["is_enabled"]),
            "description": fields["description"],
            "provider": provider.value if provider else None,
            "include_stream_usage": bool(fields.get("include_stream_usage", True)),
        }

    async def create(
        self,
        actor: Actor,
        *,
        path_prefix: str,
        upstream_url: str,
        required_scopes: list[str] | tuple[str, ...] = (),
        upstream_auth_header: str | None = None,
        upstream_auth_query_param: str | None = None,
        upstream_auth_value: str | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S,
        is_enabled: bool = True,
        description: str = "",
        provider: str | Provider | None = None,
        include_stream_usage: bool = True,
    ) -> Route:
        actor.require_admin()
        values = self._checked_values(
            {
                "path_prefix": path_prefix,
                "upstream_url": upstream_url,
                "required_scopes": required_scopes,
                "upstream_auth_header": upstream_auth_header,
                "upstream_auth_query_param": upstream_auth_query_param,
                "upstream_auth_value": upstream_auth_value,
                "connect_timeout_s": connect_timeout_s,
                "read_timeout_s": read_timeout_s,
                "total_timeout_s": total_timeout_s,
                "is_enabled": is_enabled,
                "description": description,
                "provider": provider,
                "include_stream_usage": include_stream_usage,
            }
        )
        await self._check_reachable(values["upstream_url"])
        now = utcnow()
        async with self._db.write() as connection:
            await self._refuse_duplicate_prefix(connection, values["path_prefix"], None)
            row = await routes_sql.create_route(
                connection, values | {"created_at": now, "updated_at": now}
            )
            route = self._to_route(row)
            await audit_sql.create_audit_entry(
                connection, actor, "route.create", "route", route.id, after=audit_view(route)
            )
            await audit_sql.append_change(connection, "route", route.id)
        return route

    async def list(self, actor: Actor) -> list[Route]:
        async with self._db.read() as connection:
            return [self._to_route(row) for row in await routes_sql.list_routes(connection)]

    async def read(self, actor: Actor, route_id: int) -> Route | None:
        async with self._db.read() as connection:
            row = await routes_sql.read_route(connection, route_id)
        return self._to_route(row) if row else None

    async def update(self, actor: Actor, route_id: int, changes: dict[str, Any]) -> Route:
        """Apply a partial change. Setting `upstream_auth_value` to None removes the credential
        (and where it was injected); leaving it out keeps the stored one."""
        actor.require_admin()
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise InvalidInputError(sorted(unknown)[0], "cannot be changed")
        async with self._db.write() as connection:
            row = await routes_sql.read_route(connection, route_id)
            if row is None:
                raise NotFoundError("route not found")
            before = self._to_route(row)
            current_credential = self.credential_of(row)
            fields = audit_view(before) | {
                "upstream_auth_value": current_credential.value if current_credential else None
            }
            fields.update(changes)
            if "upstream_auth_value" in changes and changes["upstream_auth_value"] is None:
                fields["upstream_auth_header"] = fields["upstream_auth_query_param"] = None
            values = self._checked_values(fields)
            if values["upstream_url"] != before.upstream_url:
                await self._check_reachable(values["upstream_url"])
            await self._refuse_duplicate_prefix(connection, values["path_prefix"], route_id)
            after = self._to_route(
                await routes_sql.update_route(
                    connection, route_id, values | {"updated_at": utcnow()}
                )
            )
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "route.update",
                "route",
                route_id,
                before=audit_view(before),
                after=audit_view(after) | {"credential_changed": "upstream_auth_value" in changes},
            )
            await audit_sql.append_change(connection, "route", route_id)
        return after

    async def delete(self, actor: Actor, route_id: int) -> None:
        actor.require_admin()
        async with self._db.write() as connection:
            row = await routes_sql.read_route(connection, route_id)
            if row is None:
                raise NotFoundError("route not found")
            await routes_sql.delete_route(connection, route_id)
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "route.delete",
                "route",
                route_id,
                before=audit_view(self._to_route(row)),
            )
            await audit_sql.append_change(connection, "route", route_id)

    async def _refuse_duplicate_prefix(
        self, connection: Any, path_prefix: str, own_id: int | None
    ) -> None:
        existing = await routes_sql.read_route_by_prefix(connection, path_prefix)
        if existing is not None and existing.id != own_id:
            raise ConflictError(f"a route with path_prefix {path_prefix!r} already exists")
