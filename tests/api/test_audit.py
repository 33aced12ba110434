"""`GET /api/audit` (admin only), and the audit entry every mutation through the API writes:
actor, action, target, before/after (with no secret in them) and client IP."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor, Role
from tokenmanager.composition import Services

from .answers import audit_entries, expect_error
from .conftest import UPSTREAM_HOST

Client = httpx.AsyncClient
Headers = dict[str, str]
CREDENTIAL = "Bearer sk-live-SECRETVALUE1234"
NEW_CREDENTIAL = "Bearer sk-live-NEWSECRET9876"
BOB_PASSWORD = "bob password 1234"
NEW_PASSWORD = "a new password 5678"


@dataclass
class World:
    """Objects made by the `admin` actor (not through the API) and every secret among them."""

    ids: dict[str, int]
    secrets: list[str]


@pytest.fixture
async def world(services: Services, admin: Actor, teams: tuple[str, str]) -> World:
    issued = await services.tokens.issue(admin, name="ci", team_id="team-a")
    route = await services.routes.create(
        admin,
        path_prefix="/api/llm",
        upstream_url=f"https://{UPSTREAM_HOST}/v1",
        upstream_auth_header="Authorization",
        upstream_auth_value=CREDENTIAL,
    )
    bob = await services.users.create(
        admin, username="bob", password=BOB_PASSWORD, role=Role.VIEWER, team_ids=["team-a"]
    )
    created_key = await services.ingest_keys.create(admin, name="edge")
    return World(
        ids={
            "token_id": issued.token.id,
            "route_id": route.id,
            "user_id": bob.id,
            "key_id": created_key.ingest_key.id,
        },
        secrets=[issued.token_secret, CREDENTIAL, BOB_PASSWORD, created_key.key_secret],
    )


ROUTE_BODY = {
    "path_prefix": "/api/new",
    "upstream_url": f"https://{UPSTREAM_HOST}/new",
    "upstream_auth_header": "X-Upstream-Key",
    "upstream_auth_value": NEW_CREDENTIAL,
}
USER_BODY = {"username": "carol", "password": NEW_PASSWORD, "role": "admin"}
MUTATIONS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("team.create", "POST", "/api/teams", {"id": "team-c", "name": "C"}),
    ("team.update", "PATCH", "/api/teams/team-b", {"name": "Bee"}),
    ("team.delete", "DELETE", "/api/teams/team-b", None),
    ("user.create", "POST", "/api/users", USER_BODY),
    ("user.update", "PATCH", "/api/users/{user_id}", {"password": NEW_PASSWORD}),
    ("user.delete", "DELETE", "/api/users/{user_id}", None),
    ("token.issue", "POST", "/api/tokens", {"name": "new", "team_id": "team-a"}),
    ("token.update", "PATCH", "/api/tokens/{token_id}", {"name": "renamed"}),
    ("token.revoke", "POST", "/api/tokens/{token_id}/revoke", None),
    ("token.rotate", "POST", "/api/tokens/{token_id}/rotate", {"grace_period_s": 60}),
    ("token.delete", "DELETE", "/api/tokens/{token_id}", None),
    ("route.create", "POST", "/api/routes", ROUTE_BODY),
    ("route.update", "PATCH", "/api/routes/{route_id}", {"upstream_auth_value": NEW_CREDENTIAL}),
    ("route.delete", "DELETE", "/api/routes/{route_id}", None),
    ("ingest_key.create", "POST", "/api/ingest-keys", {"name": "new"}),
    ("ingest_key.delete", "DELETE", "/api/ingest-keys/{key_id}", None),
]  # fmt: skip


def secrets_in(answer: httpx.Response) -> list[str]:
    """Secrets an answer shows once (a token or an ingest key)."""
    body = answer.json() if answer.content else {}
    return [body[name] for name in ("token", "key") if name in body]


def target_of(path: str, answer: httpx.Response) -> str:
    """The id in `/api/<things>/<id>...`, or the created object's id."""
    parts = path.split("/")
    return parts[3] if len(parts) > 3 else str(answer.json()["id"])


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("action", "method", "path", "body"), MUTATIONS, ids=[m[0] for m in MUTATIONS]
)
async def test_every_mutation_writes_an_audit_entry_without_secrets(
    app_client: Client,
    admin_headers: Headers,
    world: World,
    action: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    path = path.format(**world.ids)
    answer = await app_client.request(method, path, json=body, headers=admin_headers)
    assert answer.status_code < 300, answer.text

    entries = await audit_entries(app_client, admin_headers, action=action, actor="alice")

    assert len(entries) == 1, entries
    entry = entries[0]
    target_type, verb = action.split(".")
    assert (entry["target_type"], entry["target_id"]) == (target_type, target_of(path, answer))
    assert entry["client_ip"] == "127.0.0.1"
    assert abs(datetime.fromisoformat(entry["at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert (entry["before"] is not None, entry["after"] is not None) == {
        "create": (False, True),
        "issue": (False, True),
        "delete": (True, False),
    }.get(verb, (True, True))
    recorded = json.dumps(entry, ensure_ascii=False)
    for secret in [*world.secrets, NEW_PASSWORD, NEW_CREDENTIAL, *secrets_in(answer)]:
        assert secret not in recorded
        assert sha256(secret) not in recorded
    assert "SECRETVALUE" not in recorded
    assert '_hash"' not in recorded  # no token_hash, key_hash or password_hash field


async def test_refused_mutation_writes_no_audit_entry(
    app_client: Client, admin_headers: Headers, world: World
) -> None:
    path = "/api/tokens/{token_id}".format(**world.ids)

    expect_error(await app_client.patch(path, json={"token_hash": "0"}, headers=admin_headers), 422)

    assert await audit_entries(app_client, admin_headers, action="token.update") == []


async def test_audit_lists_newest_first_and_filters(
    app_client: Client, admin_headers: Headers, world: World
) -> None:
    await app_client.patch("/api/teams/team-a", json={"name": "A1"}, headers=admin_headers)
    await app_client.patch("/api/teams/team-a", json={"name": "A2"}, headers=admin_headers)

    updates = await audit_entries(
        app_client, admin_headers, action="team.update", target_type="team", target_id="team-a"
    )
    by_fixture = await audit_entries(app_client, admin_headers, actor="test-admin")
    latest = await audit_entries(app_client, admin_headers, limit="1")
    logins = await audit_entries(app_client, admin_headers, action="user.login")

    assert [entry["after"]["name"] for entry in updates] == ["A2", "A1"]
    assert updates[0]["before"]["name"] == "A1"
    assert {entry["action"] for entry in by_fixture} == {
        "team.create", "token.issue", "route.create", "user.create", "ingest_key.create"
    }  # fmt: skip
    assert latest == updates[:1]
    assert [entry["actor"] for entry in logins] == ["alice"]


async def test_audit_filters_by_time(
    app_client: Client, admin_headers: Headers, world: World
) -> None:
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    past = await audit_entries(app_client, admin_headers, until=an_hour_ago)
    recent = await audit_entries(app_client, admin_headers, since=an_hour_ago)

    assert past == []
    assert len(recent) >= 5


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z", "since"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("offset=-1", "offset"),
    ],
)
async def test_audit_with_invalid_query_gets_422(
    app_client: Client, admin_headers: Headers, query: str, field: str
) -> None:
    expect_error(await app_client.get(f"/api/audit?{query}", headers=admin_headers), 422, field)


async def test_viewer_gets_403_and_anonymous_401_on_audit(
    app_client: Client, viewer_headers: Headers
) -> None:
    expect_error(await app_client.get("/api/audit", headers=viewer_headers), 403)
    expect_error(await app_client.get("/api/audit"), 401)
