"""The tokens and security pages offer the actions a role may take: members get issue, rotate
and revoke for their teams' tokens, viewers only read (the API refuses them anyway)."""

from __future__ import annotations

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services


@pytest.fixture
def role_headers(request: pytest.FixtureRequest, role: str) -> dict[str, str]:
    headers: dict[str, str] = request.getfixturevalue(f"{role}_headers")
    return headers


@pytest.mark.parametrize(("role", "has_actions"), [("member", True), ("viewer", False)])
async def test_tokens_page_shows_token_actions_to_members_not_viewers(
    role_headers: dict[str, str],
    app_client: httpx.AsyncClient,
    services: Services,
    admin: Actor,
    role: str,
    has_actions: bool,
) -> None:
    await services.tokens.issue(admin, name="team-a bot", team_id="team-a")
    await services.tokens.issue(admin, name="team-b bot", team_id="team-b")

    page = await app_client.get("/tokens", headers=role_headers)

    assert page.status_code == 200, page.text
    assert "team-a bot" in page.text
    assert "team-b bot" not in page.text
    assert ('class="rotate"' in page.text) is has_actions
    assert ('class="danger revoke"' in page.text) is has_actions
    assert ('id="issue-form"' in page.text) is has_actions
