"""Every failure answers in the one error shape:
`{"error": {"status", "code", "message"[, "fields"]}}`, with no `detail` and no traceback."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services

from .answers import expect_error

Client = httpx.AsyncClient
CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid_input",
}
Headers = dict[str, str]

# (who, method, path, body, status); `who` is "anonymous", "garbage", "admin" or "viewer".
FAILURES: list[tuple[str, str, str, Any, int]] = [
    ("anonymous", "GET", "/api/tokens", None, 401),
    ("garbage", "GET", "/api/tokens", None, 401),
    ("anonymous", "POST", "/api/auth/login", {"username": "alice", "password": "wrong"}, 401),
    ("viewer", "POST", "/api/teams", {"id": "team-c", "name": "C"}, 403),
    ("viewer", "GET", "/api/users", None, 403),
    ("viewer", "GET", "/api/audit", None, 403),
    ("viewer", "DELETE", "/api/routes/1", None, 403),
    ("admin", "GET", "/api/tokens/999999", None, 404),
    ("admin", "GET", "/api/no-such-thing", None, 404),
    ("viewer", "GET", "/api/tokens/{team_b_token}", None, 404),
    ("viewer", "GET", "/api/teams/team-b", None, 404),
    ("admin", "DELETE", "/api/tokens", None, 405),
    ("admin", "PUT", "/api/teams/team-a", {"name": "A"}, 405),
    ("admin", "POST", "/api/teams", {"id": "team-a", "name": "A"}, 409),
    ("admin", "POST", "/api/tokens", {}, 422),
    ("admin", "POST", "/api/tokens", {"name": "x", "team_id": "team-a", "token_hash": "0"}, 422),
    ("admin", "POST", "/api/routes", {"path_prefix": "/x", "upstream_url": "ftp://x"}, 422),
    ("admin", "POST", "/api/tokens", "{not json", 422),
    ("admin", "POST", "/api/tokens", ["a", "list"], 422),
    ("admin", "GET", "/api/tokens/not-a-number", None, 422),
    ("admin", "GET", "/api/tokens?limit=0", None, 422),
    ("viewer", "PATCH", "/api/tokens/{team_a_token}", {"team_id": "team-b"}, 422),
]


@pytest.fixture
async def credentials(
    services: Services, admin: Actor, admin_headers: Headers, viewer_headers: Headers
) -> dict[str, Any]:
    """Headers per caller and ids of one token in each team."""
    team_a = await services.tokens.issue(admin, name="a", team_id="team-a")
    team_b = await services.tokens.issue(admin, name="b", team_id="team-b")
    return {
        "headers": {
            "anonymous": {},
            "garbage": {"Authorization": "Bearer garbage"},
            "admin": admin_headers,
            "viewer": viewer_headers,
        },
        "ids": {"team_a_token": team_a.token.id, "team_b_token": team_b.token.id},
    }


@pytest.mark.parametrize(
    ("who", "method", "path", "body", "status"),
    FAILURES,
    ids=[f"{status}-{who}-{method}-{path}" for who, method, path, _, status in FAILURES],
)
async def test_every_failure_has_the_one_error_shape(
    app_client: Client,
    credentials: dict[str, Any],
    who: str,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    content = body.encode() if isinstance(body, str) else None
    answer = await app_client.request(
        method,
        path.format(**credentials["ids"]),
        json=None if content else body,
        content=content,
        headers=credentials["headers"][who] | {"Content-Type": "application/json"},
    )

    error = expect_error(answer, status)  # {"error": {"status", "code", "message"[, "fields"]}}
    assert answer.headers["content-type"] == "application/json"
    assert error["code"] == CODES[status]
    assert ("fields" in error) == (status == 422)
    assert all(entry["field"] and entry["message"] for entry in error.get("fields", []))
    assert "detail" not in answer.text
    assert "Traceback" not in answer.text
