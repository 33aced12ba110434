"""What each role may do, pinned as a matrix of role x token operation x own / other team:
`admin` everything; `member` (of team-a) manages team-a's tokens and nothing of team-b's;
`viewer` (of team-a) only reads. Another team's token is 404 (not 403, so it cannot be probed);
a change the role does not allow is 403 and leaves the token as it was."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services

from .answers import expect_error, get_json

Client = httpx.AsyncClient
Headers = dict[str, str]

# operation -> (method, path under /api/tokens/{id} or None for issue, body, success status)
OPERATIONS: dict[str, tuple[str, str | None, dict[str, Any] | None, int]] = {
    "issue": ("POST", None, None, 201),
    "read": ("GET", "", None, 200),
    "update": ("PATCH", "", {"name": "renamed"}, 200),
    "rotate": ("POST", "/rotate", {"grace_period_s": 0}, 200),
    "revoke": ("POST", "/revoke", None, 200),
    "delete": ("DELETE", "", None, 204),
}
# role -> team -> operation -> expected status
EXPECTED: dict[str, dict[str, dict[str, int]]] = {
    "admin": {
        "own": {name: success for name, (_, _, _, success) in OPERATIONS.items()},
        "other": {name: success for name, (_, _, _, success) in OPERATIONS.items()},
    },
    "member": {
        "own": {name: success for name, (_, _, _, success) in OPERATIONS.items()},
        "other": dict.fromkeys(OPERATIONS, 404),
    },
    "viewer": {
        "own": {**dict.fromkeys(OPERATIONS, 403), "read": 200},
        "other": dict.fromkeys(OPERATIONS, 404),
    },
}
TEAMS = {"own": "team-a", "other": "team-b"}
CASES = [
    (role, team, operation, status)
    for role, by_team in EXPECTED.items()
    for team, by_operation in by_team.items()
    for operation, status in by_operation.items()
]
# Admin-only endpoints: members and viewers get 403, whatever their teams.
ADMIN_ONLY = [
    ("POST", "/api/teams", {"id": "team-c", "name": "C"}),
    ("PATCH", "/api/teams/team-a", {"name": "renamed"}),
    ("DELETE", "/api/teams/team-a", None),
    ("POST", "/api/routes", {"path_prefix": "/x", "upstream_url": "http://llm.upstream.test"}),
    ("GET", "/api/users", None),
    (
        "POST",
        "/api/users",
        {"username": "eve", "password": "a long passphrase", "role": "admin"},
    ),
    ("GET", "/api/audit", None),
    ("GET", "/api/ingest-keys", None),
    ("POST", "/api/ingest-keys", {"name": "edge"}),
    ("GET", "/api/security/webhooks", None),
    ("POST", "/api/security/run", None),
]
READ_FOR_ALL = ["/api/teams", "/api/routes", "/api/tokens", "/api/usage/stats", "/api/auth/me"]


@pytest.fixture
def role_headers(request: pytest.FixtureRequest, role: str) -> Headers:
    """Signed-in headers of the parametrized role (only that one user is created)."""
    headers: Headers = request.getfixturevalue(f"{role}_headers")
    return headers


@pytest.fixture
async def tokens_by_team(
    services: Services, admin: Actor, teams: tuple[str, str], role_headers: Headers
) -> dict[str, int]:
    """A token in team-a (own) and one in team-b (other), issued by the admin."""
    ids = {}
    for team, team_id in TEAMS.items():
        issued = await services.tokens.issue(admin, name=f"{team} token", team_id=team_id)
        ids[team] = issued.token.id
    return ids


@pytest.mark.parametrize(("role", "team", "operation", "status"), CASES)
async def test_role_may_do_exactly_what_its_name_says_to_tokens(
    app_client: Client,
    admin_headers: Headers,
    role_headers: Headers,
    tokens_by_team: dict[str, int],
    role: str,
    team: str,
    operation: str,
    status: int,
) -> None:
    method, suffix, body, _ = OPERATIONS[operation]
    token_path = f"/api/tokens/{tokens_by_team[team]}"
    before = await get_json(app_client, admin_headers, token_path)
    if suffix is None:
        body = {"name": "new", "team_id": TEAMS[team]}
        answer = await app_client.post("/api/tokens", json=body, headers=role_headers)
    else:
        answer = await app_client.request(
            method, token_path + suffix, json=body, headers=role_headers
        )

    if status >= 400:
        expect_error(answer, status)
        assert await get_json(app_client, admin_headers, token_path) == before
        listed = await get_json(app_client, admin_headers, "/api/tokens")
        assert len(listed) == len(TEAMS)  # nothing issued either
    else:
        assert answer.status_code == status, answer.text


@pytest.mark.parametrize("role", ["member", "viewer"])
async def test_member_and_viewer_get_403_on_admin_only_endpoints(
    app_client: Client, role_headers: Headers, role: str
) -> None:
    for method, path, body in ADMIN_ONLY:
        answer = await app_client.request(method, path, json=body, headers=role_headers)
        expect_error(answer, 403)


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
async def test_every_role_reads_what_its_teams_see(
    app_client: Client, role_headers: Headers, role: str
) -> None:
    for path in READ_FOR_ALL:
        answer = await app_client.get(path, headers=role_headers)
        assert answer.status_code == 200, (path, answer.text)
    me = await get_json(app_client, role_headers, "/api/auth/me")
    assert me["role"] == role
