"""The OpenAPI document's promises, checked without fuzzing: every id in a path or query is
bounded (a number no row can have is a 422, never a database error), every operation lists
its error statuses with the one error shape, and a 405 names every method the path serves."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tokenmanager.ids import MAX_ID

Client = httpx.AsyncClient
Headers = dict[str, str]
TOO_LARGE = ("348831125751649927168", str(MAX_ID + 1), "0")
# The dashboard's pages with ids in their paths (not in the OpenAPI document).
DASHBOARD_ID_PATHS = [
    ("GET", "/tokens/{id}"),
    ("GET", "/tokens/{id}.json"),
    ("POST", "/tokens/{id}/revoke"),
    ("POST", "/tokens/{id}/rotate"),
    ("GET", "/routes/{id}"),
    ("GET", "/routes/{id}.json"),
    ("GET", "/routes/{id}/edit"),
    ("POST", "/routes/{id}"),
]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


async def test_every_integer_path_parameter_refuses_ids_no_row_can_have(
    app_client: Client, admin_headers: Headers
) -> None:
    document = (await app_client.get("/openapi.json")).json()
    checked = 0
    for method, path, operation in _operations(document):
        names = [
            parameter["name"]
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "path" and parameter["schema"].get("type") == "integer"
        ]
        for name in names:
            assert operation["parameters"], path
            for value in TOO_LARGE:
                url = path.replace("{" + name + "}", value)
                answer = await app_client.request(method, url, headers=admin_headers, json={})
                assert answer.status_code == 422, (method, url, answer.text)
                assert answer.json()["error"]["fields"][0]["field"] == name
            checked += 1
    assert checked >= 20  # routes, tokens, users, ingest keys, findings, webhooks, usage


async def test_every_id_query_parameter_is_bounded(
    app_client: Client, admin_headers: Headers
) -> None:
    document = (await app_client.get("/openapi.json")).json()
    bounded = []
    for method, path, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and re.fullmatch(r".*_id|offset", parameter["name"]):
                schema = parameter["schema"]
                integer = next(
                    (s for s in schema.get("anyOf", [schema]) if s.get("type") == "integer"), None
                )
                if integer is None:
                    continue  # a team id: a string with a length bound
                assert integer.get("maximum") is not None, (method, path, parameter["name"])
                bounded.append((path, parameter["name"]))
    assert ("/api/usage/slow", "token_id") in bounded
    answer = await app_client.get(
        "/api/usage/errors", params={"token_id": TOO_LARGE[0]}, headers=admin_headers
    )
    assert answer.status_code == 422


@pytest.mark.parametrize(("method", "path"), DASHBOARD_ID_PATHS)
async def test_dashboard_pages_refuse_ids_no_row_can_have(
    app_client: Client, admin_headers: Headers, method: str, path: str
) -> None:
    for value in TOO_LARGE[:2]:
        answer = await app_client.request(
            method, path.replace("{id}", value), headers=admin_headers
        )
        assert answer.status_code in (404, 422), (path, value, answer.status_code)


async def test_every_operation_documents_its_errors_with_the_error_shape(
    app_client: Client,
) -> None:
    document = (await app_client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in _operations(document):
        if path in ("/healthz", "/readyz"):
            continue
        errors = {code: answer for code, answer in operation["responses"].items() if code >= "4"}
        assert {"401", "422"} <= errors.keys(), (method, path)
        for code, answer in errors.items():
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)


async def test_a_405_names_every_method_of_the_path(
    app_client: Client, admin_headers: Headers
) -> None:
    answer = await app_client.request("PUT", "/api/ingest-keys", headers=admin_headers)
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) >= {"GET", "POST"}
