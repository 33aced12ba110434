"""Users (admin only) and sign-in: login issues a session secret, logout ends it.

Session secrets are random; only their SHA-256 is stored, like tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from tokenmanager.access.actor import Actor, Role
from tokenmanager.clock import utcnow
from tokenmanager.errors import ConflictError, InvalidInputError, NotFoundError
from tokenmanager.storage import audit as audit_sql
from tokenmanager.storage import teams as teams_sql
from tokenmanager.storage import users as users_sql
from tokenmanager.storage.database import Database
from tokenmanager.users.models import User
from tokenmanager.users.passwords import Passwords, check_password_strength
from tokenmanager.users.throttle import LoginThrottle

SESSION_PREFIX = "tms_"
USERNAME_MAX_CHARS = 100


class LoginThrottledError(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__("too many failed logins")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    session_secret: str = field(repr=False)


def hash_session_secret(session_secret: str) -> str:
    return hashlib.sha256(session_secret.encode("utf-8")).hexdigest()


def audit_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role.value,
        "team_ids": list(user.team_ids),
    }


def actor_for(user: User, client_ip: str | None) -> Actor:
    return Actor(
        name=user.username,
        role=user.role,
        team_ids=frozenset(user.team_ids),
        client_ip=client_ip,
        user_id=user.id,
    )


class UserService:
    def __init__(
        self,
        database: Database,
        passwords: Passwords,
        *,
        session_ttl_s: int,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self._db = database
        self._passwords = passwords
        self._session_ttl = timedelta(seconds=session_ttl_s)
        self._throttle = throttle or LoginThrottle()

    async def create(
        self,
        actor: Actor,
        *,
        username: str,
        password: str,
        role: Role,
        team_ids: Sequence[str] = (),
    ) -> User:
        actor.require_admin()
        role = Role(role)
        _check_username(username)
        _check_password(password)
        _check_role_teams(role, team_ids)
        password_hash = await self._passwords.hash(password)
        async with self._db.write() as connection:
            await _check_teams_exist(connection, team_ids)
            if await users_sql.read_user_by_username(connection, username) is not None:
                raise ConflictError(f"user {username!r} already exists")
            user = await users_sql.create_user(
                connection,
                {
                    "username": username,
                    "password_hash": password_hash,
                    "role": role.value,
                    "created_at": utcnow(),
                },
                sorted(set(team_ids)),
            )
            await audit_sql.create_audit_entry(
                connection, actor, "user.create", "user", user.id, after=audit_view(user)
            )
        return user

    async def list(self, actor: Actor) -> list[User]:
        actor.require_admin()
        async with self._db.read() as connection:
            return await users_sql.list_users(connection)

    async def read(self, actor: Actor, user_id: int) -> User | None:
        actor.require_admin()
        async with self._db.read() as connection:
            return await users_sql.read_user(connection, user_id)

    async def update(self, actor: Actor, user_id: int, changes: dict[str, Any]) -> User:
        """Change password, role and teams. A password change ends the user's sessions."""
        actor.require_admin()
        values: dict[str, Any] = {}
        if changes.get("password") is not None:
            _check_password(changes["password"])
            values["password_hash"] = await self._passwords.hash(changes["password"])
        async with self._db.write() as connection:
            before = await users_sql.read_user(connection, user_id)
            if before is None:
                raise NotFoundError("user not found")
            role = Role(changes.get("role") or before.role)
            team_ids = changes.get("team_ids")
            team_ids = before.team_ids if team_ids is None else tuple(sorted(set(team_ids)))
            _check_role_teams(role, team_ids)
            await _check_teams_exist(connection, team_ids)
            if before.role is Role.ADMIN and role is not Role.ADMIN:
                await _keep_one_admin(connection)
            values["role"] = role.value
            await users_sql.update_user(connection, user_id, values)
            await users_sql.set_user_teams(connection, user_id, team_ids)
            if "password_hash" in values:
                await users_sql.delete_sessions_of_user(connection, user_id)
            after = await users_sql.read_user(connection, user_id)
            assert after is not None
            audit_after = audit_view(after) | {"password_changed": "password_hash" in values}
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "user.update",
                "user",
                user_id,
                before=audit_view(before),
                after=audit_after,
            )
        return after

    async def delete(self, actor: Actor, user_id: int) -> None:
        actor.require_admin()
        async with self._db.write() as connection:
            before = await users_sql.read_user(connection, user_id)
            if before is None:
                raise NotFoundError("user not found")
            if before.role is Role.ADMIN:
                await _keep_one_admin(connection)
            await users_sql.delete_user(connection, user_id)
            await audit_sql.create_audit_entry(
                connection, actor, "user.delete", "user", user_id, before=audit_view(before)
            )

    async def login(self, username: str, password: str, client_ip: str | None) -> Session | None:
        """A new session, or None for a wrong username or password (the two are not told
        apart). LoginThrottledError after too many failures for the account or the IP."""
        retry_after_s = self._throttle.retry_after_s(username, client_ip)
        if retry_after_s > 0:
            raise LoginThrottledError(retry_after_s)
        async with self._db.read() as connection:
            found = await users_sql.read_user_by_username(connection, username)
        user, password_hash = found if found else (None, None)
        is_valid = await self._passwords.verify(password_hash, password)
        if user is None or not is_valid:
            self._throttle.record_failure(username, client_ip)
            return None
        self._throttle.record_success(username)
        session_secret = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        async with self._db.write() as connection:
            await users_sql.delete_expired_sessions(connection, now)
            await users_sql.create_session(
                connection,
                hash_session_secret(session_secret),
                user.id,
                now,
                now + self._session_ttl,
            )
            await audit_sql.create_audit_entry(
                connection, actor_for(user, client_ip), "user.login", "user", user.id
            )
        return Session(user=user, session_secret=session_secret)

    async def resolve_session(self, session_secret: str) -> User | None:
        """The user a live session belongs to, or None."""
        if not session_secret.startswith(SESSION_PREFIX):
            return None
        async with self._db.read() as connection:
            return await users_sql.read_session_user(
                connection, hash_session_secret(session_secret), utcnow()
            )

    async def logout(self, session_secret: str) -> None:
        async with self._db.write() as connection:
            await users_sql.delete_session(connection, hash_session_secret(session_secret))


def _check_username(username: str) -> None:
    if (
        not username
        or len(username) > USERNAME_MAX_CHARS
        or not username.isprintable()
        or username.strip() != username
    ):
        raise InvalidInputError(
            "username",
            f"must be 1-{USERNAME_MAX_CHARS} printable characters without surrounding spaces",
        )


def _check_password(password: str) -> None:
    reason = check_password_strength(password)
    if reason:
        raise InvalidInputError("password", reason)


def _check_role_teams(role: Role, team_ids: Sequence[str]) -> None:
    if role is not Role.ADMIN and not team_ids:
        raise InvalidInputError("team_ids", f"a {role.value} needs at least one team")


async def _check_teams_exist(connection: Any, team_ids: Sequence[str]) -> None:
    for team_id in team_ids:
        if await teams_sql.read_team(connection, team_id) is None:
            raise InvalidInputError("team_ids", f"team {team_id!r} does not exist")


async def _keep_one_admin(connection: Any) -> None:
    if await users_sql.count_admins_for_update(connection) <= 1:
        raise ConflictError("the last admin cannot be removed or demoted")
