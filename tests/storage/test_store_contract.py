"""The service and store contract, run unchanged on SQLite and PostgreSQL through `services`."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from time_machine import TimeMachineFixture

from tokenmanager.access.actor import Actor, Role
from tokenmanager.composition import Services, build_services
from tokenmanager.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from tokenmanager.routes.models import Route, UpstreamCredential
from tokenmanager.settings import Settings
from tokenmanager.storage import audit as audit_sql
from tokenmanager.storage import routes as routes_sql
from tokenmanager.storage import tokens as tokens_sql
from tokenmanager.testing import make_settings
from tokenmanager.tokens.codec import display_prefix, hash_token
from tokenmanager.tokens.models import IssuedToken, TokenState
from tokenmanager.users.models import User

T = TypeVar("T")
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TEAM_A, TEAM_B = "team-a", "team-b"
PASSWORD = "correct horse battery"
CREDENTIAL = "sk-live-0123456789abcdefWXYZ"
# RFC 5737 documentation addresses: no DNS, and nothing ever listens there.
UPSTREAM = "https://192.0.2.10/v1"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # The SSRF guard refuses non-public upstreams unless they are allow-listed.
    return make_settings(tmp_path / "data", database_url, upstream_allow="192.0.2.0/24")


@pytest.fixture(autouse=True)
async def two_teams(services: Services, admin: Actor) -> None:
    for team_id in (TEAM_A, TEAM_B):
        await services.teams.create(admin, team_id=team_id, name=team_id.upper())


@pytest.fixture
def frozen(time_machine: TimeMachineFixture) -> TimeMachineFixture:
    """Time stands still at T0 until a test shifts it."""
    time_machine.move_to(T0, tick=False)
    return time_machine


def viewer_of(*team_ids: str) -> Actor:
    return Actor(name="victor", role=Role.VIEWER, team_ids=frozenset(team_ids))


def member_of(*team_ids: str) -> Actor:
    return Actor(name="mona", role=Role.MEMBER, team_ids=frozenset(team_ids))


async def issue(
    services: Services, actor: Actor, team_id: str = TEAM_A, **fields: Any
) -> IssuedToken:
    return await services.tokens.issue(actor, name=f"token of {team_id}", team_id=team_id, **fields)


async def create_route(services: Services, admin: Actor, **fields: Any) -> Route:
    return await services.routes.create(
        admin, **({"path_prefix": "/api/echo", "upstream_url": UPSTREAM} | fields)
    )


async def read_hashes(services: Services, token_id: int) -> tuple[str, str | None]:
    async with services.database.read() as connection:
        return await tokens_sql.read_token_hashes(connection, token_id)


async def read_change_version(services: Services) -> int:
    async with services.database.read() as connection:
        return await audit_sql.read_change_version(connection)


async def database_text(services: Services) -> str:
    """Every value of every row of every table, raw (no column types applied), as one string."""
    async with services.database.read() as connection:
        names = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        values = [
            str(value)
            for name in names
            for row in await connection.execute(sa.select(sa.text("*")).select_from(sa.table(name)))
            for value in row
        ]
    return "\n".join(values)


# Tokens


async def test_issue_stores_only_the_hash_and_returns_the_secret_once(
    services: Services, admin: Actor
) -> None:
    issued = await issue(services, admin, scopes=["write", "read", "read"])
    assert issued.token_secret not in repr(issued)
    assert issued.token.display_prefix == display_prefix(issued.token_secret)
    assert issued.token.scopes == ("read", "write")
    assert issued.token.created_by == admin.name
    assert await read_hashes(services, issued.token.id) == (hash_token(issued.token_secret), None)


async def test_issue_refuses_an_unknown_team(services: Services, admin: Actor) -> None:
    with pytest.raises(NotFoundError):
        await issue(services, admin, team_id="no-such-team")


async def test_issue_refuses_a_past_expiry_and_malformed_scopes(
    services: Services, admin: Actor, frozen: TimeMachineFixture
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await issue(services, admin, expires_at=T0)
    assert caught.value.field == "expires_at"
    with pytest.raises(InvalidInputError) as caught:
        await issue(services, admin, scopes=["Read"])
    assert caught.value.field == "scopes"
    assert await services.tokens.list(admin) == []


async def test_list_filters_by_team_and_by_state(
    services: Services, admin: Actor, frozen: TimeMachineFixture
) -> None:
    active = await issue(services, admin)
    expiring = await issue(services, admin, expires_at=T0 + timedelta(hours=1))
    revoked = await issue(services, admin)
    await services.tokens.revoke(admin, revoked.token.id)
    other_team = await issue(services, admin, team_id=TEAM_B)
    frozen.shift(timedelta(hours=1))  # exactly at expires_at: expired

    async def listed(**filters: Any) -> list[int]:
        return [token.id for token in await services.tokens.list(admin, **filters)]

    ids = [t.token.id for t in (active, expiring, revoked, other_team)]
    assert await listed() == ids
    assert await listed(team_id=TEAM_B) == [other_team.token.id]
    assert await listed(state=TokenState.ACTIVE) == [active.token.id, other_team.token.id]
    assert await listed(state=TokenState.EXPIRED) == [expiring.token.id]
    assert await listed(state=TokenState.REVOKED) == [revoked.token.id]
    assert await listed(team_id=TEAM_A, state=TokenState.ACTIVE) == [active.token.id]


async def test_read_returns_the_token_or_none_when_unknown(
    services: Services, admin: Actor
) -> None:
    issued = await issue(services, admin, metadata={"owner": "ops"})
    assert await services.tokens.read(admin, issued.token.id) == issued.token
    assert await services.tokens.read(admin, issued.token.id + 1000) is None


async def test_update_changes_fields_but_never_the_hash(
    services: Services, admin: Actor, frozen: TimeMachineFixture
) -> None:
    issued = await issue(services, admin)
    hashes = await read_hashes(services, issued.token.id)
    changes = {
        "name": "renamed",
        "scopes": ["b", "a"],
        "description": "for the nightly job",
        "metadata": {"ticket": 42},
        "expires_at": T0 + timedelta(days=1),
        "team_id": TEAM_B,
    }
    updated = await services.tokens.update(admin, issued.token.id, changes)
    assert (updated.name, updated.scopes, updated.description) == (
        "renamed",
        ("a", "b"),
        "for the nightly job",
    )
    assert (updated.metadata, updated.expires_at, updated.team_id) == (
        {"ticket": 42},
        T0 + timedelta(days=1),
        TEAM_B,
    )
    assert await services.tokens.read(admin, issued.token.id) == updated
    assert await read_hashes(services, issued.token.id) == hashes


@pytest.mark.parametrize(
    "field", ["token_hash", "previous_token_hash", "display_prefix", "revoked_at", "created_by"]
)
async def test_update_refuses_fields_that_cannot_change(
    services: Services, admin: Actor, field: str
) -> None:
    issued = await issue(services, admin)
    with pytest.raises(InvalidInputError) as caught:
        await services.tokens.update(admin, issued.token.id, {"name": "x", field: "0" * 64})
    assert caught.value.field == field
    assert await services.tokens.read(admin, issued.token.id) == issued.token


async def test_update_refuses_a_move_to_an_unknown_team(services: Services, admin: Actor) -> None:
    issued = await issue(services, admin)
    with pytest.raises(NotFoundError):
        await services.tokens.update(admin, issued.token.id, {"team_id": "no-such-team"})


async def test_revoke_is_idempotent_and_keeps_the_first_revocation_time(
    services: Services, admin: Actor, frozen: TimeMachineFixture
) -> None:
    issued = await issue(services, admin)
    first = await services.tokens.revoke(admin, issued.token.id)
    frozen.shift(timedelta(minutes=5))
    second = await services.tokens.revoke(admin, issued.token.id)
    assert first.revoked_at == second.revoked_at == T0
    assert len(await services.audit.list(admin, action="token.revoke")) == 1


async def test_rotate_keeps_the_old_secret_working_for_the_grace_period(
    services: Services, admin: Actor, frozen: TimeMachineFixture
) -> None:
    issued = await issue(services, admin)
    rotated = await services.tokens.rotate(admin, issued.token.id)
    assert rotated.token_secret != issued.token_secret
    assert rotated.token.display_prefix == display_prefix(rotated.token_secret)
    assert await read_hashes(services, issued.token.id) == (
        hash_token(rotated.token_secret),
        hash_token(issued.token_secret),
    )
    grace = timedelta(seconds=services.settings.rotation_grace_s)
    assert rotated.token.previous_hash_expires_at == T0 + grace


async def test_second_rotation_ends_the_first_old_secret(services: Services, admin: Actor) -> None:
    issued = await issue(services, admin)
    first = await services.tokens.rotate(admin, issued.token.id)
    second = await services.tokens.rotate(admin, issued.token.id)
    assert await read_hashes(services, issued.token.id) == (
        hash_token(second.token_secret),
        hash_token(first.token_secret),
    )


async def test_rotate_without_grace_keeps_no_old_secret(services: Services, admin: Actor) -> None:
    issued = await issue(services, admin)
    rotated = await services.tokens.rotate(admin, issued.token.id, grace_s=0)
    assert await read_hashes(services, issued.token.id) == (hash_token(rotated.token_secret), None)
    assert rotated.token.previous_hash_expires_at is None


async def test_rotate_refuses_a_negative_grace(services: Services, admin: Actor) -> None:
    issued = await issue(services, admin)
    with pytest.raises(InvalidInputError):
        await services.tokens.rotate(admin, issued.token.id, grace_s=-1)


async def test_rotate_of_a_revoked_token_conflicts(services: Services, admin: Actor) -> None:
    issued = await issue(services, admin)
    await services.tokens.revoke(admin, issued.token.id)
    with pytest.raises(ConflictError):
        await services.tokens.rotate(admin, issued.token.id)


async def test_revoke_after_rotation_ends_the_grace_period(
    services: Services, admin: Actor
) -> None:
    issued = await issue(services, admin)
    rotated = await services.tokens.rotate(admin, issued.token.id)
    revoked = await services.tokens.revoke(admin, issued.token.id)
    assert await read_hashes(services, issued.token.id) == (hash_token(rotated.token_secret), None)
    assert revoked.previous_hash_expires_at is None


async def test_delete_removes_the_token_and_a_second_delete_is_not_found(
    services: Services, admin: Actor
) -> None:
    issued = await issue(services, admin)
    await services.tokens.delete(admin, issued.token.id)
    assert await services.tokens.read(admin, issued.token.id) is None
    with pytest.raises(NotFoundError):
        await services.tokens.delete(admin, issued.token.id)


async def test_import_hash_adopts_a_sha256_digest_normalised_to_lower_case(
    services: Services, admin: Actor
) -> None:
    digest = hash_token("a token of the original design")
    token = await services.tokens.import_hash(
        admin, token_hash=f" {digest.upper()} ", name="legacy", team_id=TEAM_A
    )
    assert (token.is_imported, token.display_prefix) == (True, "")
    assert await read_hashes(services, token.id) == (digest, None)


@pytest.mark.parametrize(
    "token_hash",
    ["", "abc", "g" * 64, "a" * 63, "a" * 65, "ntk_" + "a" * 60, "a" * 32 + " " + "a" * 31],
)
async def test_import_hash_refuses_anything_but_a_sha256_hex_digest(
    services: Services, admin: Actor, token_hash: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await services.tokens.import_hash(admin, token_hash=token_hash, name="x", team_id=TEAM_A)
    assert caught.value.field == "token_hash"


async def test_import_hash_of_a_hash_already_stored_conflicts(
    services: Services, admin: Actor
) -> None:
    issued = await issue(services, admin)
    with pytest.raises(ConflictError):
        await services.tokens.import_hash(
            admin, token_hash=hash_token(issued.token_secret), name="dup", team_id=TEAM_A
        )


# Viewers


async def test_viewer_lists_and_reads_only_their_teams_tokens(
    services: Services, admin: Actor
) -> None:
    own = await issue(services, admin, team_id=TEAM_A)
    other = await issue(services, admin, team_id=TEAM_B)
    viewer = viewer_of(TEAM_A)
    assert [t.id for t in await services.tokens.list(viewer)] == [own.token.id]
    assert await services.tokens.list(viewer, team_id=TEAM_B) == []
    assert await services.tokens.read(viewer, own.token.id) == own.token
    assert await services.tokens.read(viewer, other.token.id) is None


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda s, a, i: s.tokens.update(a, i, {"name": "x"}), id="update"),
        pytest.param(lambda s, a, i: s.tokens.revoke(a, i), id="revoke"),
        pytest.param(lambda s, a, i: s.tokens.rotate(a, i), id="rotate"),
        pytest.param(lambda s, a, i: s.tokens.delete(a, i), id="delete"),
    ],
)
async def test_viewer_gets_not_found_for_another_teams_token(
    services: Services, admin: Actor, operation: Any
) -> None:
    other = await issue(services, admin, team_id=TEAM_B)
    with pytest.raises(NotFoundError):
        await operation(services, viewer_of(TEAM_A), other.token.id)
    assert await services.tokens.read(admin, other.token.id) == other.token


async def test_member_cannot_issue_into_or_move_tokens_to_another_team(
    services: Services, admin: Actor
) -> None:
    member = member_of(TEAM_A)
    with pytest.raises(NotFoundError):
        await issue(services, member, team_id=TEAM_B)
    own = await issue(services, member, team_id=TEAM_A)
    with pytest.raises(InvalidInputError) as caught:
        await services.tokens.update(member, own.token.id, {"team_id": TEAM_B})
    assert caught.value.field == "team_id"


async def test_viewer_reads_but_cannot_change_their_own_teams_tokens(
    services: Services, admin: Actor
) -> None:
    viewer = viewer_of(TEAM_A)
    own = await issue(services, admin, team_id=TEAM_A)
    assert await services.tokens.read(viewer, own.token.id) == own.token
    with pytest.raises(PermissionDeniedError):
        await issue(services, viewer, team_id=TEAM_A)
    for change in (
        lambda: services.tokens.update(viewer, own.token.id, {"name": "renamed"}),
        lambda: services.tokens.rotate(viewer, own.token.id),
        lambda: services.tokens.revoke(viewer, own.token.id),
        lambda: services.tokens.delete(viewer, own.token.id),
    ):
        with pytest.raises(PermissionDeniedError):
            await change()
    assert await services.tokens.read(admin, own.token.id) == own.token


# Teams


async def test_team_create_of_an_existing_id_conflicts(services: Services, admin: Actor) -> None:
    with pytest.raises(ConflictError):
        await services.teams.create(admin, team_id=TEAM_A, name="again")


@pytest.mark.parametrize("team_id", ["", "Team", "-team", "team a", "team\n", "t" * 65, "tëam"])
async def test_team_create_refuses_a_malformed_id(
    services: Services, admin: Actor, team_id: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await services.teams.create(admin, team_id=team_id, name="x")
    assert caught.value.field == "id"


async def test_team_delete_is_refused_while_the_team_owns_tokens(
    services: Services, admin: Actor
) -> None:
    issued = await issue(services, admin, team_id=TEAM_B)
    with pytest.raises(ConflictError, match="1 token"):
        await services.teams.delete(admin, TEAM_B)
    await services.tokens.delete(admin, issued.token.id)
    await services.teams.delete(admin, TEAM_B)
    assert await services.teams.read(admin, TEAM_B) is None


async def test_viewer_sees_only_their_teams_and_cannot_create_one(
    services: Services, admin: Actor
) -> None:
    viewer = viewer_of(TEAM_A)
    assert [team.id for team in await services.teams.list(viewer)] == [TEAM_A]
    assert await services.teams.read(viewer, TEAM_B) is None
    with pytest.raises(PermissionDeniedError):
        await services.teams.create(viewer, team_id="team-c", name="C")


# Users and sessions


async def create_user(
    services: Services, admin: Actor, username: str = "alice", role: Role = Role.ADMIN
) -> User:
    team_ids = [TEAM_A] if role is Role.VIEWER else []
    return await services.users.create(
        admin, username=username, password=PASSWORD, role=role, team_ids=team_ids
    )


async def test_user_create_of_an_existing_username_conflicts(
    services: Services, admin: Actor
) -> None:
    await create_user(services, admin)
    with pytest.raises(ConflictError):
        await create_user(services, admin, role=Role.VIEWER)


async def test_user_create_refuses_a_viewer_without_an_existing_team(
    services: Services, admin: Actor
) -> None:
    for team_ids in ([], ["no-such-team"]):
        with pytest.raises(InvalidInputError) as caught:
            await services.users.create(
                admin, username="v", password=PASSWORD, role=Role.VIEWER, team_ids=team_ids
            )
        assert caught.value.field == "team_ids"


async def test_the_last_admin_cannot_be_deleted_or_demoted(
    services: Services, admin: Actor
) -> None:
    alice = await create_user(services, admin)
    with pytest.raises(ConflictError):
        await services.users.delete(admin, alice.id)
    with pytest.raises(ConflictError):
        await services.users.update(admin, alice.id, {"role": Role.VIEWER, "team_ids": [TEAM_A]})
    bob = await create_user(services, admin, "bob")
    demoted = await services.users.update(
        admin, alice.id, {"role": Role.VIEWER, "team_ids": [TEAM_A]}
    )
    assert demoted.role is Role.VIEWER
    with pytest.raises(ConflictError):
        await services.users.delete(admin, bob.id)


async def test_login_with_the_right_password_opens_a_session(
    services: Services, admin: Actor
) -> None:
    alice = await create_user(services, admin)
    session = await services.users.login("alice", PASSWORD, "192.0.2.1")
    assert session is not None
    assert session.session_secret not in repr(session)
    assert await services.users.resolve_session(session.session_secret) == alice


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong password 123"), ("mallory", PASSWORD)]
)
async def test_login_returns_none_for_a_wrong_password_or_an_unknown_user(
    services: Services, admin: Actor, username: str, password: str
) -> None:
    await create_user(services, admin)
    assert await services.users.login(username, password, "192.0.2.1") is None


async def test_password_change_ends_the_users_sessions(services: Services, admin: Actor) -> None:
    alice = await create_user(services, admin)
    session = await services.users.login("alice", PASSWORD, None)
    assert session is not None
    await services.users.update(admin, alice.id, {"password": "a brand new password"})
    assert await services.users.resolve_session(session.session_secret) is None
    assert await services.users.login("alice", PASSWORD, None) is None
    assert await services.users.login("alice", "a brand new password", None) is not None


async def test_session_ends_when_its_lifetime_is_over(
    services: Services, admin: Actor, frozen: TimeMachineFixture
) -> None:
    await create_user(services, admin)
    session = await services.users.login("alice", PASSWORD, None)
    assert session is not None
    frozen.shift(timedelta(seconds=services.settings.session_ttl_s - 1))
    assert await services.users.resolve_session(session.session_secret) is not None
    frozen.shift(timedelta(seconds=1))
    assert await services.users.resolve_session(session.session_secret) is None


async def test_logout_ends_the_session(services: Services, admin: Actor) -> None:
    await create_user(services, admin)
    session = await services.users.login("alice", PASSWORD, None)
    assert session is not None
    await services.users.logout(session.session_secret)
    assert await services.users.resolve_session(session.session_secret) is None


# Routes


async def stored_credential(services: Services, route_id: int) -> UpstreamCredential | None:
    """The credential as the gateway decrypts it from the stored row."""
    async with services.database.read() as connection:
        row = await routes_sql.read_route(connection, route_id)
    assert row is not None
    return services.routes.credential_of(row)


async def test_route_create_of_an_existing_prefix_conflicts_after_normalisation(
    services: Services, admin: Actor
) -> None:
    await create_route(services, admin)
    with pytest.raises(ConflictError):
        await create_route(services, admin, path_prefix=" /api/echo/ ")


async def test_route_create_refuses_a_non_http_upstream(services: Services, admin: Actor) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await create_route(services, admin, upstream_url="file:///etc/passwd")
    assert caught.value.field == "upstream_url"
    assert await services.routes.list(admin) == []


async def test_route_credential_is_encrypted_at_rest_and_shown_by_its_last_four(
    services: Services, admin: Actor
) -> None:
    route = await create_route(
        services, admin, upstream_auth_header="Authorization", upstream_auth_value=CREDENTIAL
    )
    assert route.upstream_auth_value_hint == "…" + CREDENTIAL[-4:]
    assert CREDENTIAL not in await database_text(services)  # the routes table and all others
    credential = await stored_credential(services, route.id)
    assert credential is not None
    assert (credential.header, credential.value) == ("Authorization", CREDENTIAL)


async def test_route_update_keeps_the_credential_when_it_is_not_given(
    services: Services, admin: Actor
) -> None:
    route = await create_route(
        services, admin, upstream_auth_query_param="key", upstream_auth_value=CREDENTIAL
    )
    updated = await services.routes.update(admin, route.id, {"description": "echo service"})
    assert updated.upstream_auth_value_hint == route.upstream_auth_value_hint
    credential = await stored_credential(services, route.id)
    assert credential is not None
    assert (credential.query_param, credential.value) == ("key", CREDENTIAL)


async def test_route_update_with_none_removes_the_credential_and_where_it_went(
    services: Services, admin: Actor
) -> None:
    route = await create_route(
        services, admin, upstream_auth_header="X-Upstream-Key", upstream_auth_value=CREDENTIAL
    )
    updated = await services.routes.update(admin, route.id, {"upstream_auth_value": None})
    assert (updated.upstream_auth_header, updated.upstream_auth_value_hint) == (None, None)
    assert await stored_credential(services, route.id) is None


async def test_route_update_refuses_a_taken_prefix_and_unknown_fields(
    services: Services, admin: Actor
) -> None:
    await create_route(services, admin)
    other = await create_route(services, admin, path_prefix="/api/other")
    with pytest.raises(ConflictError):
        await services.routes.update(admin, other.id, {"path_prefix": "/api/echo"})
    with pytest.raises(InvalidInputError) as caught:
        await services.routes.update(admin, other.id, {"upstream_auth_value_encrypted": "x"})
    assert caught.value.field == "upstream_auth_value_encrypted"
    assert await services.routes.read(admin, other.id) == other


async def test_viewer_cannot_create_a_route(services: Services) -> None:
    with pytest.raises(PermissionDeniedError):
        await create_route(services, viewer_of(TEAM_A))


# Ingest keys


async def test_ingest_key_verifies_its_own_secret_until_deleted(
    services: Services, admin: Actor
) -> None:
    created = await services.ingest_keys.create(admin, name="collector")
    key = created.ingest_key
    assert await services.ingest_keys.verify(created.key_secret) == key
    assert await services.ingest_keys.verify(created.key_secret[:-1] + "?") is None
    assert await services.ingest_keys.verify(created.key_secret[4:]) is None
    await services.ingest_keys.delete(admin, key.id)
    assert await services.ingest_keys.verify(created.key_secret) is None
    with pytest.raises(NotFoundError):
        await services.ingest_keys.delete(admin, key.id)


# Audit log and change feed


async def test_every_mutation_is_audited_and_token_and_route_changes_bump_the_change_feed(
    services: Services, admin: Actor
) -> None:
    async def step(action: str, operation: Awaitable[T], *, feeds: bool = False) -> T:
        version = await read_change_version(services)
        result = await operation
        latest = (await services.audit.list(admin, limit=1))[0]
        assert (latest.action, latest.actor, latest.client_ip) == (action, admin.name, "127.0.0.1")
        if feeds:
            assert await read_change_version(services) > version, action
        return result

    teams, tokens, routes = services.teams, services.tokens, services.routes
    await step("team.create", teams.create(admin, team_id="team-c", name="C"))
    await step("team.update", teams.update(admin, "team-c", {"name": "Team C"}))
    token_id = (await step("token.issue", issue(services, admin, "team-c"), feeds=True)).token.id
    await step("token.update", tokens.update(admin, token_id, {"name": "n"}), feeds=True)
    await step("token.rotate", tokens.rotate(admin, token_id), feeds=True)
    await step("token.revoke", tokens.revoke(admin, token_id), feeds=True)
    await step("token.delete", tokens.delete(admin, token_id), feeds=True)
    imported = await step(
        "token.import",
        tokens.import_hash(admin, token_hash="a" * 64, name="legacy", team_id="team-c"),
        feeds=True,
    )
    await step("token.delete", tokens.delete(admin, imported.id), feeds=True)
    await step("team.delete", teams.delete(admin, "team-c"))
    route_id = (await step("route.create", create_route(services, admin), feeds=True)).id
    await step("route.update", routes.update(admin, route_id, {"is_enabled": False}), feeds=True)
    await step("route.delete", routes.delete(admin, route_id), feeds=True)
    user = await step("user.create", create_user(services, admin))
    await step("user.update", services.users.update(admin, user.id, {"password": PASSWORD * 2}))
    second = await step("user.create", create_user(services, admin, "bob"))
    await step("user.delete", services.users.delete(admin, second.id))
    key = await step("ingest_key.create", services.ingest_keys.create(admin, name="k"))
    await step("ingest_key.delete", services.ingest_keys.delete(admin, key.ingest_key.id))


async def test_audit_entries_never_hold_the_token_secret(services: Services, admin: Actor) -> None:
    issued = await issue(services, admin)
    entry = (await services.audit.list(admin, action="token.issue"))[0]
    assert entry.target_id == str(issued.token.id)
    assert entry.after is not None
    assert entry.after["display_prefix"] == issued.token.display_prefix
    assert issued.token_secret not in repr(entry)


# Secrets at rest


async def test_no_secret_reaches_the_database(services: Services, admin: Actor) -> None:
    issued = await issue(services, admin)
    rotated = await services.tokens.rotate(admin, issued.token.id)
    ingest_key = await services.ingest_keys.create(admin, name="collector")
    await create_user(services, admin)
    session = await services.users.login("alice", PASSWORD, None)
    assert session is not None
    secrets = [
        issued.token_secret,
        rotated.token_secret,
        ingest_key.key_secret,
        session.session_secret,
        PASSWORD,
    ]

    text = await database_text(services)
    # The dump does see what is stored: the token's hashes are in it.
    assert hash_token(issued.token_secret) in text
    assert hash_token(rotated.token_secret) in text
    assert [secret for secret in secrets if secret in text] == []


async def test_control_plane_postgres_sessions_get_the_configured_work_mem(
    services: Services, tmp_path: Path
) -> None:
    if services.database.dialect != "postgresql":
        pytest.skip("work_mem is a PostgreSQL setting")
    async with services.database.read() as connection:
        assert (await connection.exec_driver_sql("SHOW work_mem")).scalar_one() == "32MB"
    url = services.settings.resolved_database_url
    tuned = build_services(make_settings(tmp_path / "tuned", url, postgres_work_mem="64MB"))
    try:
        async with tuned.database.read() as connection:
            assert (await connection.exec_driver_sql("SHOW work_mem")).scalar_one() == "64MB"
    finally:
        await tuned.close()
