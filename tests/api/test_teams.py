"""`/api/teams`: admins create, read, update and delete; viewers see only their own teams."""

from __future__ import annotations

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services

from .answers import expect_error, get_json

Client = httpx.AsyncClient
Headers = dict[str, str]


async def create_team(client: Client, headers: Headers, **fields: str) -> httpx.Response:
    return await client.post(
        "/api/teams", json={"id": "backend-team", "name": "Backend"} | fields, headers=headers
    )


async def test_admin_creates_reads_lists_updates_and_deletes_a_team(
    app_client: Client, admin_headers: Headers
) -> None:
    created = await create_team(app_client, admin_headers, description="the API people")
    assert created.status_code == 201, created.text
    team = created.json()
    assert (team["id"], team["name"], team["description"]) == (
        "backend-team",
        "Backend",
        "the API people",
    )
    assert await get_json(app_client, admin_headers, "/api/teams/backend-team") == team
    assert team in await get_json(app_client, admin_headers, "/api/teams")

    updated = await app_client.patch(
        "/api/teams/backend-team", json={"name": "Back end"}, headers=admin_headers
    )
    assert updated.status_code == 200, updated.text
    assert updated.json() == team | {"name": "Back end"}

    deleted = await app_client.delete("/api/teams/backend-team", headers=admin_headers)
    assert deleted.status_code == 204
    expect_error(await app_client.get("/api/teams/backend-team", headers=admin_headers), 404)


async def test_duplicate_team_id_gets_409(app_client: Client, admin_headers: Headers) -> None:
    assert (await create_team(app_client, admin_headers)).status_code == 201

    expect_error(await create_team(app_client, admin_headers, name="Other"), 409)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"id": "Backend Team", "name": "Backend"}, ["id"]),
        ({"id": "../etc", "name": "Backend"}, ["id"]),
        ({"id": "", "name": ""}, ["id", "name"]),
        ({"id": "x" * 65, "name": "Backend"}, ["id"]),
        ({"name": "Backend"}, ["id"]),
        ({"id": "backend-team", "name": "Backend", "description": 7}, ["description"]),
    ],
    ids=["spaces", "path", "empty", "too-long", "missing-id", "description-not-text"],
)
async def test_create_team_with_invalid_values_gets_422_naming_each_field(
    app_client: Client, admin_headers: Headers, body: dict[str, object], fields: list[str]
) -> None:
    answer = await app_client.post("/api/teams", json=body, headers=admin_headers)

    expect_error(answer, 422, *fields)
    assert await get_json(app_client, admin_headers, "/api/teams") == []


async def test_create_team_with_unknown_field_gets_422(
    app_client: Client, admin_headers: Headers
) -> None:
    answer = await create_team(app_client, admin_headers, created_at="2020-01-01T00:00:00Z")

    expect_error(answer, 422, "created_at")
    assert await get_json(app_client, admin_headers, "/api/teams") == []


@pytest.mark.parametrize("body", [{"id": "renamed"}, {"name": "B", "created_at": "2020-01-01"}])
async def test_update_team_with_unknown_field_gets_422_and_changes_nothing(
    app_client: Client, admin_headers: Headers, body: dict[str, str]
) -> None:
    team = (await create_team(app_client, admin_headers)).json()

    answer = await app_client.patch("/api/teams/backend-team", json=body, headers=admin_headers)

    expect_error(answer, 422, *(set(body) - {"name"}))
    assert await get_json(app_client, admin_headers, "/api/teams/backend-team") == team


async def test_update_or_delete_of_unknown_team_gets_404(
    app_client: Client, admin_headers: Headers
) -> None:
    patched = await app_client.patch("/api/teams/nope", json={"name": "N"}, headers=admin_headers)
    deleted = await app_client.delete("/api/teams/nope", headers=admin_headers)

    expect_error(patched, 404)
    expect_error(deleted, 404)


async def test_delete_team_that_still_owns_tokens_gets_409(
    app_client: Client,
    admin_headers: Headers,
    services: Services,
    admin: Actor,
    teams: tuple[str, str],
) -> None:
    await services.tokens.issue(admin, name="ci", team_id="team-a")

    expect_error(await app_client.delete("/api/teams/team-a", headers=admin_headers), 409)
    assert (await app_client.get("/api/teams/team-a", headers=admin_headers)).status_code == 200


async def test_viewer_lists_and_reads_only_their_own_team(
    app_client: Client, viewer_headers: Headers
) -> None:
    listed = await get_json(app_client, viewer_headers, "/api/teams")

    assert [team["id"] for team in listed] == ["team-a"]
    assert (await app_client.get("/api/teams/team-a", headers=viewer_headers)).status_code == 200
    expect_error(await app_client.get("/api/teams/team-b", headers=viewer_headers), 404)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/teams", {"id": "team-c", "name": "C"}),
        ("PATCH", "/api/teams/team-a", {"name": "Renamed"}),
        ("DELETE", "/api/teams/team-a", None),
    ],
    ids=["create", "update", "delete"],
)
async def test_viewer_cannot_change_teams(
    app_client: Client,
    viewer_headers: Headers,
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    answer = await app_client.request(method, path, json=body, headers=viewer_headers)

    expect_error(answer, 403)
    listed = await get_json(app_client, viewer_headers, "/api/teams")
    assert [(team["id"], team["name"]) for team in listed] == [("team-a", "TEAM-A")]
