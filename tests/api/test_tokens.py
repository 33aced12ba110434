"""`/api/tokens`: the token lifecycle over HTTP. The secret is shown only at issue and rotate;
viewers act only on their own team's tokens and other teams' tokens answer 404."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from .answers import expect_error, get_json

Client = httpx.AsyncClient
Headers = dict[str, str]
TOKEN_SECRET = re.compile(r"^ntk_[0-9A-Za-z]{49}$")
TOKEN_FIELDS = {
    "id", "name", "team_id", "display_prefix", "scopes", "description", "metadata", "state",
    "created_at", "created_by", "expires_at", "revoked_at", "last_used",
    "previous_secret_expires_at", "is_imported",
}  # fmt: skip


def without_secret(issued: dict[str, Any]) -> dict[str, Any]:
    """What reads show of an issued token: everything but `token`."""
    return {name: value for name, value in issued.items() if name != "token"}


def assert_no_secret_fields(token: dict[str, Any]) -> None:
    assert set(token) >= TOKEN_FIELDS
    assert "token" not in token
    assert not [name for name in token if "hash" in name]


async def issue(
    client: Client, headers: Headers, team_id: str = "team-a", **fields: Any
) -> dict[str, Any]:
    body = {"name": "ci", "team_id": team_id, "scopes": ["llm:chat"]} | fields
    answer = await client.post("/api/tokens", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    issued: dict[str, Any] = answer.json()
    return issued


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def assert_about(text: str, expected: datetime) -> None:
    assert abs(datetime.fromisoformat(text) - expected) < timedelta(minutes=1), text


@pytest.fixture
async def token(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str]
) -> dict[str, Any]:
    """A token of team-a, issued by the admin (with its secret)."""
    return await issue(app_client, admin_headers)


async def test_issue_returns_fields_and_secret_once(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str]
) -> None:
    expires_at = later(3600)

    issued = await issue(
        app_client,
        admin_headers,
        scopes=["llm:chat", "llm:*"],
        description="nightly build",
        metadata={"owner": "ops"},
        expires_at=expires_at.isoformat(),
    )

    assert TOKEN_FIELDS | {"token"} <= set(issued)
    assert TOKEN_SECRET.match(issued["token"])
    assert issued["token"].startswith(issued["display_prefix"])
    assert issued["scopes"] == ["llm:*", "llm:chat"]
    assert (issued["state"], issued["created_by"], issued["metadata"]) == (
        "active",
        "alice",
        {"owner": "ops"},
    )
    assert datetime.fromisoformat(issued["expires_at"]) == expires_at


async def test_read_and_list_never_show_the_secret(
    app_client: Client, admin_headers: Headers, token: dict[str, Any]
) -> None:
    read = await app_client.get(f"/api/tokens/{token['id']}", headers=admin_headers)
    listed = await app_client.get("/api/tokens", headers=admin_headers)

    assert read.json() == without_secret(token)
    assert_no_secret_fields(read.json())
    assert len(listed.json()) == 1
    assert_no_secret_fields(listed.json()[0])
    assert token["token"] not in read.text + listed.text


async def test_list_filters_by_team_and_state(
    app_client: Client, admin_headers: Headers, token: dict[str, Any]
) -> None:
    other = await issue(app_client, admin_headers, team_id="team-b")
    await app_client.post(f"/api/tokens/{other['id']}/revoke", headers=admin_headers)

    async def listed_ids(query: str) -> list[int]:
        return [t["id"] for t in await get_json(app_client, admin_headers, "/api/tokens" + query)]

    assert sorted(await listed_ids("")) == [token["id"], other["id"]]
    assert await listed_ids("?team_id=team-a") == [token["id"]]
    assert await listed_ids("?state=revoked") == [other["id"]]
    assert await listed_ids("?state=active") == [token["id"]]
    assert await listed_ids("?state=expired") == []


async def test_update_changes_name_scopes_metadata_and_expiry(
    app_client: Client, admin_headers: Headers, token: dict[str, Any]
) -> None:
    changes = {
        "name": "deploy",
        "scopes": ["billing:read"],
        "description": "moved",
        "metadata": {"ticket": 42},
        "expires_at": later(7200).isoformat(),
    }

    answer = await app_client.patch(
        f"/api/tokens/{token['id']}", json=changes, headers=admin_headers
    )

    assert answer.status_code == 200, answer.text
    updated = answer.json()
    assert {name: updated[name] for name in changes if name != "expires_at"} == {
        name: value for name, value in changes.items() if name != "expires_at"
    }
    assert_about(updated["expires_at"], later(7200))
    assert_no_secret_fields(updated)


async def test_admin_moves_a_token_to_another_team(
    app_client: Client, admin_headers: Headers, token: dict[str, Any]
) -> None:
    answer = await app_client.patch(
        f"/api/tokens/{token['id']}", json={"team_id": "team-b"}, headers=admin_headers
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["team_id"] == "team-b"


async def test_revoke_sets_revoked_and_is_idempotent(
    app_client: Client, admin_headers: Headers, token: dict[str, Any]
) -> None:
    first = await app_client.post(f"/api/tokens/{token['id']}/revoke", headers=admin_headers)
    second = await app_client.post(f"/api/tokens/{token['id']}/revoke", headers=admin_headers)

    assert first.status_code == 200, first.text
    assert first.json()["state"] == "revoked"
    assert_about(first.json()["revoked_at"], datetime.now(UTC))
    assert second.json()["revoked_at"] == first.json()["revoked_at"]
    assert_no_secret_fields(first.json())


@pytest.mark.parametrize(
    ("body", "grace_s"),
    [({"grace_period_s": 600}, 600), (None, 24 * 3600)],
    ids=["given-grace", "default-grace"],
)
async def test_rotate_returns_a_new_secret_and_keeps_the_old_for_the_grace_period(
    app_client: Client,
    admin_headers: Headers,
    token: dict[str, Any],
    body: dict[str, int] | None,
    grace_s: int,
) -> None:
    answer = await app_client.post(
        f"/api/tokens/{token['id']}/rotate", json=body, headers=admin_headers
    )

    assert answer.status_code == 200, answer.text
    rotated = answer.json()
    assert TOKEN_SECRET.match(rotated["token"])
    assert rotated["token"] != token["token"]
    assert rotated["display_prefix"] == rotated["token"][: len(rotated["display_prefix"])]
    assert_about(rotated["previous_secret_expires_at"], later(grace_s))
    read = await get_json(app_client, admin_headers, f"/api/tokens/{token['id']}")
    assert_no_secret_fields(read)


async def test_rotate_without_grace_ends_the_old_secret_at_once(
    app_client: Client, admin_headers: Headers, token: dict[str, Any]
) -> None:
    answer = await app_client.post(
        f"/api/tokens/{token['id']}/rotate", json={"grace_period_s": 0}, headers=admin_headers
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["previous_secret_expires_at"] is None


@pytest.mark.parametrize("grace_period_s", [-1, 31 * 24 * 3600, "soon"])
async def test_rotate_with_invalid_grace_gets_422(
    app_client: Client, admin_headers: Headers, token: dict[str, Any], grace_period_s: object
) -> None:
    answer = await app_client.post(
        f"/api/tokens/{token['id']}/rotate",
        json={"grace_period_s": grace_period_s},
        headers=admin_headers,
    )

    expect_error(answer, 422, "grace_period_s")
    read = await get_json(app_client, admin_headers, f"/api/tokens/{token['id']}")
    assert read["display_prefix"] == token["display_prefix"]


async def test_rotate_of_revoked_token_gets_409(
    app_client: Client, admin_headers: Headers, token: dict[str, Any]
) -> None:
    await app_client.post(f"/api/tokens/{token['id']}/revoke", headers=admin_headers)

    expect_error(
        await app_client.post(f"/api/tokens/{token['id']}/rotate", headers=admin_headers), 409
    )


async def test_delete_removes_the_token(
    app_client: Client, admin_headers: Headers, token: dict[str, Any]
) -> None:
    answer = await app_client.delete(f"/api/tokens/{token['id']}", headers=admin_headers)

    assert answer.status_code == 204
    expect_error(await app_client.get(f"/api/tokens/{token['id']}", headers=admin_headers), 404)
    expect_error(await app_client.delete(f"/api/tokens/{token['id']}", headers=admin_headers), 404)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["name", "team_id"]),
        ({"name": "", "team_id": "team-a"}, ["name"]),
        ({"name": "x" * 201, "team_id": "team-a"}, ["name"]),
        ({"name": "ci", "team_id": "team-a", "scopes": "llm:chat"}, ["scopes"]),
        ({"name": "ci", "team_id": "team-a", "scopes": ["LLM CHAT"]}, ["scopes"]),
        ({"name": "ci", "team_id": "team-a", "expires_at": "tomorrow"}, ["expires_at"]),
        ({"name": "ci", "team_id": "team-a", "expires_at": "2001-01-01T00:00:00Z"}, ["expires_at"]),
        ({"name": "ci", "team_id": "team-a", "metadata": ["not", "a", "map"]}, ["metadata"]),
        ({"name": 5, "team_id": "", "scopes": [1]}, ["name", "team_id", "scopes.0"]),
    ],
    ids=[
        "missing",
        "empty-name",
        "long-name",
        "scopes-not-list",
        "bad-scope",
        "bad-expiry",
        "past-expiry",
        "metadata-not-map",
        "several",
    ],
)
async def test_issue_with_invalid_values_gets_422_naming_each_field(
    app_client: Client,
    admin_headers: Headers,
    teams: tuple[str, str],
    body: dict[str, Any],
    fields: list[str],
) -> None:
    answer = await app_client.post("/api/tokens", json=body, headers=admin_headers)

    expect_error(answer, 422, *fields)
    assert await get_json(app_client, admin_headers, "/api/tokens") == []


@pytest.mark.parametrize("field", ["token_hash", "id", "created_by", "revoked_at"])
async def test_issue_with_unknown_field_gets_422_naming_it(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str], field: str
) -> None:
    body = {"name": "ci", "team_id": "team-a", field: "0" * 64}

    answer = await app_client.post("/api/tokens", json=body, headers=admin_headers)

    expect_error(answer, 422, field)
    assert await get_json(app_client, admin_headers, "/api/tokens") == []


async def test_issue_for_unknown_team_gets_404(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str]
) -> None:
    answer = await app_client.post(
        "/api/tokens", json={"name": "ci", "team_id": "nope"}, headers=admin_headers
    )

    expect_error(answer, 404)


@pytest.mark.parametrize(
    "body",
    [
        {"token_hash": "0" * 64},
        {"id": 999},
        {"name": "renamed", "revoked_at": None},
        {"display_prefix": "ntk_forged"},
        {"is_imported": True},
    ],
    ids=["token_hash", "id", "revoked_at", "display_prefix", "is_imported"],
)
async def test_update_with_unknown_field_gets_422_and_changes_nothing(
    app_client: Client, admin_headers: Headers, token: dict[str, Any], body: dict[str, Any]
) -> None:
    answer = await app_client.patch(f"/api/tokens/{token['id']}", json=body, headers=admin_headers)

    expect_error(answer, 422, *(set(body) - {"name"}))
    read = await get_json(app_client, admin_headers, f"/api/tokens/{token['id']}")
    assert read == without_secret(token)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["Not A Scope"]}, "scopes"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": ""}, "name"),
        ({"metadata": "x"}, "metadata"),
    ],
)
async def test_update_with_invalid_value_gets_422_and_changes_nothing(
    app_client: Client,
    admin_headers: Headers,
    token: dict[str, Any],
    body: dict[str, Any],
    field: str,
) -> None:
    answer = await app_client.patch(f"/api/tokens/{token['id']}", json=body, headers=admin_headers)

    expect_error(answer, 422, field)
    read = await get_json(app_client, admin_headers, f"/api/tokens/{token['id']}")
    assert read == without_secret(token)


@pytest.mark.parametrize(
    "query", ["?state=lost", "?limit=0", "?limit=1001", "?offset=-1", "?team_id=" + "x" * 65]
)
async def test_list_with_invalid_query_gets_422(
    app_client: Client, admin_headers: Headers, query: str
) -> None:
    answer = await app_client.get("/api/tokens" + query, headers=admin_headers)

    expect_error(answer, 422, query[1:].split("=")[0])


async def test_unknown_or_malformed_token_id_gets_404_or_422(
    app_client: Client, admin_headers: Headers
) -> None:
    expect_error(await app_client.get("/api/tokens/999999", headers=admin_headers), 404)
    expect_error(await app_client.get("/api/tokens/abc", headers=admin_headers), 422, "token_id")


# Viewers: victor sees team-a only.


@pytest.fixture
async def team_b_token(
    app_client: Client, admin_headers: Headers, viewer_headers: Headers
) -> dict[str, Any]:
    return await issue(app_client, admin_headers, team_id="team-b")


async def test_viewer_lists_only_their_teams_tokens(
    app_client: Client,
    admin_headers: Headers,
    viewer_headers: Headers,
    team_b_token: dict[str, Any],
) -> None:
    own = await issue(app_client, admin_headers, team_id="team-a")

    listed = await get_json(app_client, viewer_headers, "/api/tokens")
    filtered = await get_json(app_client, viewer_headers, "/api/tokens?team_id=team-b")

    assert [token["id"] for token in listed] == [own["id"]]
    assert filtered == []


async def test_member_manages_their_own_teams_tokens(
    app_client: Client, member_headers: Headers
) -> None:
    issued = await issue(app_client, member_headers, team_id="team-a")
    path = f"/api/tokens/{issued['id']}"

    assert (await app_client.get(path, headers=member_headers)).status_code == 200
    patched = await app_client.patch(path, json={"name": "renamed"}, headers=member_headers)
    assert patched.status_code == 200
    assert (await app_client.post(path + "/rotate", headers=member_headers)).status_code == 200
    assert (await app_client.post(path + "/revoke", headers=member_headers)).status_code == 200
    assert (await app_client.delete(path, headers=member_headers)).status_code == 204


async def test_viewer_cannot_issue_for_another_team(
    app_client: Client, admin_headers: Headers, viewer_headers: Headers
) -> None:
    answer = await app_client.post(
        "/api/tokens", json={"name": "ci", "team_id": "team-b"}, headers=viewer_headers
    )

    expect_error(answer, 404)
    assert await get_json(app_client, admin_headers, "/api/tokens") == []


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "stolen"}),
        ("POST", "/revoke", None),
        ("POST", "/rotate", {"grace_period_s": 0}),
        ("DELETE", "", None),
    ],
    ids=["read", "update", "revoke", "rotate", "delete"],
)
async def test_viewer_gets_404_for_another_teams_token(
    app_client: Client,
    admin_headers: Headers,
    viewer_headers: Headers,
    team_b_token: dict[str, Any],
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
) -> None:
    path = f"/api/tokens/{team_b_token['id']}"

    answer = await app_client.request(method, path + suffix, json=body, headers=viewer_headers)

    assert expect_error(answer, 404)["message"] == "token not found"
    read = await get_json(app_client, admin_headers, path)
    assert read == without_secret(team_b_token)


async def test_member_cannot_move_a_token_to_another_team(
    app_client: Client, admin_headers: Headers, member_headers: Headers
) -> None:
    own = await issue(app_client, member_headers, team_id="team-a")

    answer = await app_client.patch(
        f"/api/tokens/{own['id']}", json={"team_id": "team-b"}, headers=member_headers
    )

    expect_error(answer, 422, "team_id")
    assert (await get_json(app_client, admin_headers, f"/api/tokens/{own['id']}"))[
        "team_id"
    ] == "team-a"
