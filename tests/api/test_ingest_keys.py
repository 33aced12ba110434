"""`/api/ingest-keys` (admin only): the key is shown once, at creation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .answers import expect_error, get_json

Client = httpx.AsyncClient
Headers = dict[str, str]


@pytest.fixture
async def ingest_key(app_client: Client, admin_headers: Headers) -> dict[str, Any]:
    answer = await app_client.post(
        "/api/ingest-keys", json={"name": "edge gateway"}, headers=admin_headers
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def test_create_shows_the_key_once(
    app_client: Client, admin_headers: Headers, ingest_key: dict[str, Any]
) -> None:
    assert {"id", "name", "key"} <= set(ingest_key)
    assert ingest_key["name"] == "edge gateway"
    assert ingest_key["key"].startswith("tik_")
    assert ingest_key["key"].startswith(ingest_key["display_prefix"])

    listed = await app_client.get("/api/ingest-keys", headers=admin_headers)

    assert [key["id"] for key in listed.json()] == [ingest_key["id"]]
    assert "key" not in listed.json()[0]
    assert ingest_key["key"] not in listed.text


async def test_delete_removes_the_key(
    app_client: Client, admin_headers: Headers, ingest_key: dict[str, Any]
) -> None:
    path = f"/api/ingest-keys/{ingest_key['id']}"

    assert (await app_client.delete(path, headers=admin_headers)).status_code == 204
    assert await get_json(app_client, admin_headers, "/api/ingest-keys") == []
    expect_error(await app_client.delete(path, headers=admin_headers), 404)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["name"]),
        ({"name": ""}, ["name"]),
        ({"name": "x" * 201}, ["name"]),
        ({"name": "edge", "key_hash": "0" * 64}, ["key_hash"]),
        ({"name": "edge", "key": "tik_chosen-by-me"}, ["key"]),
    ],
    ids=["missing", "empty", "too-long", "key_hash", "key"],
)
async def test_create_with_bad_input_gets_422_naming_the_field(
    app_client: Client, admin_headers: Headers, body: dict[str, Any], fields: list[str]
) -> None:
    answer = await app_client.post("/api/ingest-keys", json=body, headers=admin_headers)

    expect_error(answer, 422, *fields)
    assert await get_json(app_client, admin_headers, "/api/ingest-keys") == []


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("GET", "", None), ("POST", "", {"name": "mine"}), ("DELETE", "/{id}", None)],
    ids=["list", "create", "delete"],
)
async def test_viewer_gets_403_on_ingest_keys(
    app_client: Client,
    admin_headers: Headers,
    viewer_headers: Headers,
    ingest_key: dict[str, Any],
    method: str,
    suffix: str,
    body: dict[str, str] | None,
) -> None:
    path = "/api/ingest-keys" + suffix.format(id=ingest_key["id"])

    answer = await app_client.request(method, path, json=body, headers=viewer_headers)

    expect_error(answer, 403)
    listed = await get_json(app_client, admin_headers, "/api/ingest-keys")
    assert [key["id"] for key in listed] == [ingest_key["id"]]
