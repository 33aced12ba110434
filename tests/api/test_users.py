"""`/api/users` (admin only): passwords are write-only and changing one ends old sessions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conftest import sign_in

from .answers import expect_error, get_json

Client = httpx.AsyncClient
Headers = dict[str, str]
BOB_PASSWORD = "bob password 1234"


async def create_bob(client: Client, headers: Headers, **fields: Any) -> httpx.Response:
    body = {"username": "bob", "password": BOB_PASSWORD, "role": "viewer", "team_ids": ["team-a"]}
    return await client.post("/api/users", json=body | fields, headers=headers)


@pytest.fixture
async def bob(app_client: Client, admin_headers: Headers, teams: tuple[str, str]) -> dict[str, Any]:
    answer = await create_bob(app_client, admin_headers)
    assert answer.status_code == 201, answer.text
    user: dict[str, Any] = answer.json()
    return user


async def test_admin_creates_a_viewer_whose_password_is_never_shown(
    app_client: Client, bob: dict[str, Any]
) -> None:
    assert set(bob) == {"id", "username", "role", "team_ids", "created_at"}
    assert (bob["username"], bob["role"], bob["team_ids"]) == ("bob", "viewer", ["team-a"])


async def test_admin_lists_and_reads_users(
    app_client: Client, admin_headers: Headers, bob: dict[str, Any]
) -> None:
    listed = await get_json(app_client, admin_headers, "/api/users")

    assert [user["username"] for user in listed] == ["alice", "bob"]
    assert await get_json(app_client, admin_headers, f"/api/users/{bob['id']}") == bob
    assert BOB_PASSWORD not in str(listed)


async def test_admin_updates_role_and_teams(
    app_client: Client, admin_headers: Headers, bob: dict[str, Any]
) -> None:
    answer = await app_client.patch(
        f"/api/users/{bob['id']}", json={"team_ids": ["team-a", "team-b"]}, headers=admin_headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["team_ids"] == ["team-a", "team-b"]

    answer = await app_client.patch(
        f"/api/users/{bob['id']}", json={"role": "admin"}, headers=admin_headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["role"] == "admin"


async def test_password_change_ends_the_users_sessions(
    app_client: Client, admin_headers: Headers, bob: dict[str, Any]
) -> None:
    bob_headers = await sign_in(app_client, "bob", BOB_PASSWORD)

    answer = await app_client.patch(
        f"/api/users/{bob['id']}", json={"password": "a new password 5678"}, headers=admin_headers
    )

    assert answer.status_code == 200, answer.text
    expect_error(await app_client.get("/api/auth/me", headers=bob_headers), 401)
    assert await sign_in(app_client, "bob", "a new password 5678")


async def test_admin_deletes_a_user(
    app_client: Client, admin_headers: Headers, bob: dict[str, Any]
) -> None:
    answer = await app_client.delete(f"/api/users/{bob['id']}", headers=admin_headers)

    assert answer.status_code == 204
    expect_error(await app_client.get(f"/api/users/{bob['id']}", headers=admin_headers), 404)


async def test_last_admin_cannot_be_deleted_or_demoted(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str]
) -> None:
    me = await get_json(app_client, admin_headers, "/api/auth/me")

    deleted = await app_client.delete(f"/api/users/{me['id']}", headers=admin_headers)
    demoted = await app_client.patch(
        f"/api/users/{me['id']}",
        json={"role": "viewer", "team_ids": ["team-a"]},
        headers=admin_headers,
    )

    expect_error(deleted, 409)
    expect_error(demoted, 409)
    assert (await get_json(app_client, admin_headers, "/api/auth/me"))["role"] == "admin"


async def test_duplicate_username_gets_409(
    app_client: Client, admin_headers: Headers, bob: dict[str, Any]
) -> None:
    expect_error(await create_bob(app_client, admin_headers, role="admin", team_ids=[]), 409)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"password": "short"}, ["password"]),
        ({"role": "root"}, ["role"]),
        ({"team_ids": []}, ["team_ids"]),
        ({"team_ids": ["no-such-team"]}, ["team_ids"]),
        ({"username": " bob "}, ["username"]),
        ({"username": "", "password": "", "role": "root"}, ["username", "password", "role"]),
    ],
    ids=[
        "short-password",
        "unknown-role",
        "viewer-without-team",
        "unknown-team",
        "padded-username",
        "several",
    ],
)
async def test_create_user_with_invalid_values_gets_422_naming_each_field(
    app_client: Client,
    admin_headers: Headers,
    teams: tuple[str, str],
    fields: dict[str, Any],
    named: list[str],
) -> None:
    expect_error(await create_bob(app_client, admin_headers, **fields), 422, *named)
    listed = await get_json(app_client, admin_headers, "/api/users")
    assert [user["username"] for user in listed] == ["alice"]


async def test_create_user_with_password_hash_gets_422(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str]
) -> None:
    answer = await create_bob(app_client, admin_headers, password_hash="$argon2id$v=19$...")

    expect_error(answer, 422, "password_hash")


@pytest.mark.parametrize(
    "body",
    [{"username": "robert"}, {"password_hash": "$argon2id$v=19$..."}, {"id": 1}],
    ids=["username", "password_hash", "id"],
)
async def test_update_user_with_unknown_field_gets_422_and_changes_nothing(
    app_client: Client, admin_headers: Headers, bob: dict[str, Any], body: dict[str, Any]
) -> None:
    answer = await app_client.patch(f"/api/users/{bob['id']}", json=body, headers=admin_headers)

    expect_error(answer, 422, *body)
    assert await get_json(app_client, admin_headers, f"/api/users/{bob['id']}") == bob
    assert await sign_in(app_client, "bob", BOB_PASSWORD)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/users", None),
        ("GET", "/api/users/1", None),
        ("POST", "/api/users", {"username": "eve", "password": BOB_PASSWORD, "role": "admin"}),
        ("PATCH", "/api/users/1", {"role": "viewer", "team_ids": ["team-a"]}),
        ("DELETE", "/api/users/1", None),
    ],
    ids=["list", "read", "create", "update", "delete"],
)
async def test_viewer_gets_403_on_users(
    app_client: Client,
    admin_headers: Headers,
    viewer_headers: Headers,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    answer = await app_client.request(method, path, json=body, headers=viewer_headers)

    expect_error(answer, 403)
    listed = await get_json(app_client, admin_headers, "/api/users")
    assert [(user["username"], user["role"]) for user in listed] == [
        ("alice", "admin"),
        ("victor", "viewer"),
    ]
