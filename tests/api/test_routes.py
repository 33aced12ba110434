"""`/api/routes`: admins create, update and delete; everyone signed in reads. The upstream
credential is write-only: reads show only whether it is set and its last 4 characters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tokenmanager.composition import Services
from tokenmanager.storage.gateway import list_route_rows

from .answers import audit_entries, expect_error, get_json
from .conftest import UPSTREAM_HOST

Client = httpx.AsyncClient
Headers = dict[str, str]
UPSTREAM_URL = f"https://{UPSTREAM_HOST}/v1"
CREDENTIAL = "Bearer sk-live-SECRETVALUE1234"


async def create_route(client: Client, headers: Headers, **fields: Any) -> httpx.Response:
    body = {
        "path_prefix": "/api/llm",
        "upstream_url": UPSTREAM_URL,
        "required_scopes": ["llm:chat"],
        "upstream_auth_header": "Authorization",
        "upstream_auth_value": CREDENTIAL,
    }
    return await client.post("/api/routes", json=body | fields, headers=headers)


@pytest.fixture
async def route(app_client: Client, admin_headers: Headers) -> dict[str, Any]:
    answer = await create_route(app_client, admin_headers)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def routes_of(client: Client, headers: Headers) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = await get_json(client, headers, "/api/routes")
    return routes


async def test_create_keeps_the_credential_write_only(
    app_client: Client, admin_headers: Headers
) -> None:
    answer = await create_route(app_client, admin_headers)

    assert answer.status_code == 201, answer.text
    route = answer.json()
    assert (route["path_prefix"], route["upstream_url"], route["required_scopes"]) == (
        "/api/llm",
        UPSTREAM_URL,
        ["llm:chat"],
    )
    assert route["upstream_auth_header"] == "Authorization"
    assert route["upstream_auth_value_set"] is True
    assert route["upstream_auth_value_last4"] == "…1234"
    assert "upstream_auth_value" not in route
    assert "SECRETVALUE" not in answer.text


async def test_create_normalises_trailing_slashes(
    app_client: Client, admin_headers: Headers
) -> None:
    answer = await create_route(
        app_client, admin_headers, path_prefix="/api/llm/", upstream_url=UPSTREAM_URL + "/"
    )

    assert answer.status_code == 201, answer.text
    assert (answer.json()["path_prefix"], answer.json()["upstream_url"]) == (
        "/api/llm",
        UPSTREAM_URL,
    )


async def test_create_without_credential_has_none_set(
    app_client: Client, admin_headers: Headers
) -> None:
    answer = await create_route(
        app_client, admin_headers, upstream_auth_header=None, upstream_auth_value=None
    )

    assert answer.status_code == 201, answer.text
    assert answer.json()["upstream_auth_value_set"] is False
    assert answer.json()["upstream_auth_value_last4"] is None


async def test_admin_lists_and_reads_routes(
    app_client: Client, admin_headers: Headers, route: dict[str, Any]
) -> None:
    assert await routes_of(app_client, admin_headers) == [route]
    assert await get_json(app_client, admin_headers, f"/api/routes/{route['id']}") == route


async def test_update_changes_fields_and_keeps_the_credential(
    app_client: Client, admin_headers: Headers, route: dict[str, Any]
) -> None:
    changes = {
        "upstream_url": f"http://{UPSTREAM_HOST}:8080/v2",
        "required_scopes": ["llm:embed"],
        "read_timeout_s": 30.0,
        "is_enabled": False,
        "description": "paused",
    }

    answer = await app_client.patch(
        f"/api/routes/{route['id']}", json=changes, headers=admin_headers
    )

    assert answer.status_code == 200, answer.text
    updated = answer.json()
    assert {name: updated[name] for name in changes} == changes
    assert (updated["upstream_auth_value_set"], updated["upstream_auth_value_last4"]) == (
        True,
        "…1234",
    )


async def test_update_replaces_the_credential(
    app_client: Client, admin_headers: Headers, route: dict[str, Any]
) -> None:
    answer = await app_client.patch(
        f"/api/routes/{route['id']}",
        json={"upstream_auth_value": "Bearer sk-live-NEWVALUE9876"},
        headers=admin_headers,
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["upstream_auth_value_last4"] == "…9876"


async def test_update_with_null_credential_removes_it(
    app_client: Client, admin_headers: Headers, route: dict[str, Any]
) -> None:
    answer = await app_client.patch(
        f"/api/routes/{route['id']}", json={"upstream_auth_value": None}, headers=admin_headers
    )

    assert answer.status_code == 200, answer.text
    updated = answer.json()
    assert (updated["upstream_auth_value_set"], updated["upstream_auth_value_last4"]) == (
        False,
        None,
    )
    assert updated["upstream_auth_header"] is None


async def test_delete_removes_the_route(
    app_client: Client, admin_headers: Headers, route: dict[str, Any]
) -> None:
    answer = await app_client.delete(f"/api/routes/{route['id']}", headers=admin_headers)

    assert answer.status_code == 204
    expect_error(await app_client.get(f"/api/routes/{route['id']}", headers=admin_headers), 404)
    assert await routes_of(app_client, admin_headers) == []


@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("PATCH", {"description": "x"}), ("DELETE", None)]
)
async def test_unknown_route_gets_404(
    app_client: Client, admin_headers: Headers, method: str, body: dict[str, str] | None
) -> None:
    answer = await app_client.request(
        method, "/api/routes/999999", json=body, headers=admin_headers
    )

    expect_error(answer, 404)


@pytest.mark.parametrize("path_prefix", ["/api/llm", "/api/llm/"])
async def test_duplicate_path_prefix_gets_409(
    app_client: Client, admin_headers: Headers, route: dict[str, Any], path_prefix: str
) -> None:
    answer = await create_route(app_client, admin_headers, path_prefix=path_prefix)

    expect_error(answer, 409)
    assert await routes_of(app_client, admin_headers) == [route]


async def test_update_to_another_routes_prefix_gets_409(
    app_client: Client, admin_headers: Headers, route: dict[str, Any]
) -> None:
    other = (await create_route(app_client, admin_headers, path_prefix="/api/other")).json()

    answer = await app_client.patch(
        f"/api/routes/{other['id']}", json={"path_prefix": "/api/llm"}, headers=admin_headers
    )

    expect_error(answer, 409)
    assert await get_json(app_client, admin_headers, f"/api/routes/{other['id']}") == other


NOT_HTTP_URLS = [
    "ftp://files.example/pub",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "gopher://llm.upstream.test/",
    "//llm.upstream.test/v1",
    "https://user:password@llm.upstream.test/v1",
    "https://llm.upstream.test/v1#fragment",
    "http://127.0.0.1:8080/",
    "http://169.254.169.254/latest/meta-data",
    "http://2130706433/",
]


@pytest.mark.parametrize("upstream_url", NOT_HTTP_URLS)
async def test_create_with_unacceptable_upstream_url_gets_422(
    app_client: Client, admin_headers: Headers, upstream_url: str
) -> None:
    answer = await create_route(app_client, admin_headers, upstream_url=upstream_url)

    expect_error(answer, 422, "upstream_url")
    assert "SECRETVALUE" not in answer.text
    assert await routes_of(app_client, admin_headers) == []


@pytest.mark.parametrize("upstream_url", NOT_HTTP_URLS[:3])
async def test_update_with_non_http_upstream_url_gets_422_and_changes_nothing(
    app_client: Client, admin_headers: Headers, route: dict[str, Any], upstream_url: str
) -> None:
    answer = await app_client.patch(
        f"/api/routes/{route['id']}", json={"upstream_url": upstream_url}, headers=admin_headers
    )

    expect_error(answer, 422, "upstream_url")
    assert await routes_of(app_client, admin_headers) == [route]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"path_prefix": "api/llm"}, ["path_prefix"]),
        ({"path_prefix": "/api/../admin"}, ["path_prefix"]),
        ({"path_prefix": ""}, ["path_prefix"]),
        ({"required_scopes": ["llm:*"]}, ["required_scopes"]),
        ({"required_scopes": "llm:chat"}, ["required_scopes"]),
        ({"connect_timeout_s": 0}, ["connect_timeout_s"]),
        ({"total_timeout_s": 99999}, ["total_timeout_s"]),
        ({"connect_timeout_s": 10, "total_timeout_s": 5}, ["connect_timeout_s"]),
        ({"upstream_auth_header": "Host"}, ["upstream_auth_header"]),
        ({"upstream_auth_header": "Bad Header"}, ["upstream_auth_header"]),
        ({"upstream_auth_header": None}, ["upstream_auth_value"]),
        ({"upstream_auth_value": "Bearer x\r\nX-Admin: 1"}, ["upstream_auth_value"]),
        ({"upstream_auth_query_param": "key"}, ["upstream_auth_query_param"]),
        ({"is_enabled": "maybe"}, ["is_enabled"]),
        ({"provider": "azure"}, ["provider"]),
        ({"provider": "OpenAI"}, ["provider"]),
        ({"provider": ""}, ["provider"]),
        ({"include_stream_usage": "sometimes"}, ["include_stream_usage"]),
        (
            {"path_prefix": 1, "upstream_url": None, "read_timeout_s": -1},
            ["path_prefix", "upstream_url", "read_timeout_s"],
        ),
    ],
    ids=[
        "relative-prefix",
        "dot-dot",
        "empty-prefix",
        "wildcard-scope",
        "scopes-not-list",
        "zero-timeout",
        "huge-timeout",
        "connect-over-total",
        "reserved-header",
        "bad-header",
        "value-without-place",
        "crlf-value",
        "header-and-query",
        "bad-bool",
        "unknown-provider",
        "provider-case",
        "empty-provider",
        "bad-stream-usage",
        "several",
    ],
)
async def test_create_with_invalid_values_gets_422_naming_each_field(
    app_client: Client, admin_headers: Headers, fields: dict[str, Any], named: list[str]
) -> None:
    answer = await create_route(app_client, admin_headers, **fields)

    expect_error(answer, 422, *named)
    assert "SECRETVALUE" not in answer.text
    assert await routes_of(app_client, admin_headers) == []


@pytest.mark.parametrize("field", ["upstream_auth_value_encrypted", "id", "created_at"])
async def test_create_with_unknown_field_gets_422_naming_it(
    app_client: Client, admin_headers: Headers, field: str
) -> None:
    answer = await create_route(app_client, admin_headers, **{field: "x"})

    expect_error(answer, 422, field)
    assert await routes_of(app_client, admin_headers) == []


@pytest.mark.parametrize(
    "body",
    [{"id": 7}, {"upstream_auth_value_encrypted": "gAAAA"}, {"updated_at": "2020-01-01"}],
    ids=["id", "encrypted-value", "updated_at"],
)
async def test_update_with_unknown_field_gets_422_and_changes_nothing(
    app_client: Client, admin_headers: Headers, route: dict[str, Any], body: dict[str, Any]
) -> None:
    answer = await app_client.patch(f"/api/routes/{route['id']}", json=body, headers=admin_headers)

    expect_error(answer, 422, *body)
    assert await routes_of(app_client, admin_headers) == [route]


async def test_viewer_reads_routes_without_the_credential(
    app_client: Client, viewer_headers: Headers, route: dict[str, Any]
) -> None:
    listed = await app_client.get("/api/routes", headers=viewer_headers)
    read = await app_client.get(f"/api/routes/{route['id']}", headers=viewer_headers)

    assert listed.json() == [route]
    assert read.json() == route
    assert "SECRETVALUE" not in listed.text + read.text


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "", {"path_prefix": "/api/mine", "upstream_url": UPSTREAM_URL}),
        ("PATCH", "/{id}", {"upstream_url": f"https://{UPSTREAM_HOST}/evil"}),
        ("DELETE", "/{id}", None),
    ],
    ids=["create", "update", "delete"],
)
async def test_viewer_cannot_change_routes(
    app_client: Client,
    admin_headers: Headers,
    viewer_headers: Headers,
    route: dict[str, Any],
    method: str,
    suffix: str,
    body: dict[str, str] | None,
) -> None:
    path = "/api/routes" + suffix.format(id=route["id"])

    answer = await app_client.request(method, path, json=body, headers=viewer_headers)

    expect_error(answer, 403)
    assert await routes_of(app_client, admin_headers) == [route]


async def test_a_new_route_is_not_an_llm_route_and_asks_streams_for_usage(
    route: dict[str, Any],
) -> None:
    assert (route["provider"], route["include_stream_usage"]) == (None, True)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_create_with_a_provider_keeps_it(
    app_client: Client, admin_headers: Headers, provider: str
) -> None:
    answer = await create_route(
        app_client, admin_headers, provider=provider, include_stream_usage=False
    )

    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert (created["provider"], created["include_stream_usage"]) == (provider, False)
    assert await get_json(app_client, admin_headers, f"/api/routes/{created['id']}") == created


async def test_update_sets_changes_and_clears_the_provider_with_audit(
    app_client: Client, admin_headers: Headers, route: dict[str, Any]
) -> None:
    path = f"/api/routes/{route['id']}"
    to_openai = await app_client.patch(path, json={"provider": "openai"}, headers=admin_headers)
    assert to_openai.status_code == 200, to_openai.text
    assert (to_openai.json()["provider"], to_openai.json()["include_stream_usage"]) == (
        "openai",
        True,
    )

    no_stream_usage = await app_client.patch(
        path, json={"include_stream_usage": False}, headers=admin_headers
    )
    assert (no_stream_usage.json()["provider"], no_stream_usage.json()["include_stream_usage"]) == (
        "openai",
        False,
    )

    # null leaves include_stream_usage as it is; provider null makes it a plain route again.
    cleared = await app_client.patch(
        path, json={"provider": None, "include_stream_usage": None}, headers=admin_headers
    )
    assert (cleared.json()["provider"], cleared.json()["include_stream_usage"]) == (None, False)

    entries = await audit_entries(
        app_client, admin_headers, action="route.update", target_id=str(route["id"])
    )
    assert [(e["before"]["provider"], e["after"]["provider"]) for e in entries] == [
        ("openai", None),
        ("openai", "openai"),
        (None, "openai"),
    ]
    assert entries[1]["before"]["include_stream_usage"] is True
    assert entries[1]["after"]["include_stream_usage"] is False


async def test_update_with_an_unknown_provider_gets_422_and_changes_nothing(
    app_client: Client, admin_headers: Headers, route: dict[str, Any]
) -> None:
    answer = await app_client.patch(
        f"/api/routes/{route['id']}", json={"provider": "gemini"}, headers=admin_headers
    )

    expect_error(answer, 422, "provider")
    assert await routes_of(app_client, admin_headers) == [route]


async def test_gateway_route_rows_carry_provider_and_stream_usage(
    app_client: Client, admin_headers: Headers, services: Services
) -> None:
    answer = await create_route(app_client, admin_headers, provider="anthropic")
    assert answer.status_code == 201, answer.text

    async with services.database.read() as connection:
        rows = await list_route_rows(connection)
    assert [(row.provider, row.include_stream_usage) for row in rows] == [("anthropic", True)]
