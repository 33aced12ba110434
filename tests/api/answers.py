"""Checks on API answers shared by this package's tests: the one error shape and reads."""

from __future__ import annotations

from typing import Any

import httpx

ERROR_KEYS = {"status", "code", "message"}


def expect_error(answer: httpx.Response, status: int, *fields: str) -> dict[str, Any]:
    """The answer's `error` object, after checking its status, its shape and that each of
    `fields` is named in it."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert list(body) == ["error"], body
    error: dict[str, Any] = body["error"]
    assert set(error) - {"fields"} == ERROR_KEYS, error
    assert error["status"] == status
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    for entry in error.get("fields", []):
        assert set(entry) == {"field", "message"}, entry
    named = {entry["field"] for entry in error.get("fields", [])}
    assert set(fields) <= named, error
    return error


async def get_json(client: httpx.AsyncClient, headers: dict[str, str], path: str) -> Any:
    answer = await client.get(path, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def audit_entries(
    client: httpx.AsyncClient, headers: dict[str, str], **filters: str
) -> list[dict[str, Any]]:
    """Audit entries, newest first, filtered like `GET /api/audit?action=...`."""
    answer = await client.get("/api/audit", headers=headers, params=filters)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()
    return entries
