"""The composition root: settings in, every service out. The API app and the CLI both build
their services here, so there is one place where the product's parts are wired together.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenmanager.audit.service import AuditService
from tokenmanager.crypto import Keyring
from tokenmanager.errors import ConfigurationError
from tokenmanager.ingest_keys.service import IngestKeyService
from tokenmanager.routes.service import RouteService
from tokenmanager.settings import Settings, load_secret_key
from tokenmanager.ssrf import UpstreamPolicy
from tokenmanager.storage.database import Database
from tokenmanager.teams.service import TeamService
from tokenmanager.tokens.service import TokenService
from tokenmanager.users.passwords import Passwords
from tokenmanager.users.service import UserService


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    database: Database
    keyring: Keyring
    teams: TeamService
    users: UserService
    tokens: TokenService
    routes: RouteService
    ingest_keys: IngestKeyService
    audit: AuditService

    async def close(self) -> None:
        await self.database.dispose()


def upstream_policy(settings: Settings) -> UpstreamPolicy:
    try:
        return UpstreamPolicy.parse(settings.upstream_allow)
    except ValueError as exc:
        raise ConfigurationError(f"TOKENMANAGER_UPSTREAM_ALLOW: {exc}") from None


def build_services(settings: Settings) -> Services:
    """Wire every service to one database; raises ConfigurationError for unusable settings."""
    database = Database.from_url(settings.resolved_database_url)
    keyring = Keyring(load_secret_key(settings))
    passwords = Passwords(
        time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib
    )
    return Services(
        settings=settings,
        database=database,
        keyring=keyring,
        teams=TeamService(database),
        users=UserService(database, passwords, session_ttl_s=settings.session_ttl_s),
        tokens=TokenService(database, rotation_grace_s=settings.rotation_grace_s),
        routes=RouteService(database, keyring, upstream_policy(settings)),
        ingest_keys=IngestKeyService(database),
        audit=AuditService(database),
    )
