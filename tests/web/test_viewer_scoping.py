"""Viewers see only their teams' data on every page's `.json` twin and in its HTML, on SQLite
and PostgreSQL: the viewer's figures equal the admin's figures filtered to the viewer's team,
other teams' tokens are not found, and the audit log is for admins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services

from .conftest import Stage, build_stage


async def _signed_in_client(base_url: str, username: str, password: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base_url, timeout=30.0)
    form_page = await client.get("/login")
    csrf_token = form_page.text.split('name="csrf_token" value="')[1].split('"')[0]
    answer = await client.post(
        "/login", data={"csrf_token": csrf_token, "username": username, "password": password}
    )
    assert answer.status_code == 303, answer.text
    return client


@pytest.fixture
async def stage(services: Services, admin: Actor, users: dict[str, Any]) -> Stage:
    return await build_stage(services, admin)


@pytest.fixture
async def clients(
    control_plane: str, users: dict[str, tuple[str, str]], stage: Stage
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    admin_client = await _signed_in_client(control_plane, *users["admin"])
    viewer_client = await _signed_in_client(control_plane, *users["viewer"])
    yield {"admin": admin_client, "viewer": viewer_client}
    await admin_client.aclose()
    await viewer_client.aclose()


async def _json(client: httpx.AsyncClient, path: str, status: int = 200) -> Any:
    answer = await client.get(path)
    assert answer.status_code == status, (path, answer.text)
    return answer.json()


async def test_viewer_twins_hold_only_their_teams_usage(
    clients: dict[str, httpx.AsyncClient], stage: Stage
) -> None:
    admin, viewer = clients["admin"], clients["viewer"]
    mine = await _json(viewer, "/usage-analytics.json")
    team_a = await _json(admin, "/usage-analytics.json?team_id=team-a")
    everything = await _json(admin, "/usage-analytics.json")
    assert mine["overview"] == team_a["overview"]
    assert mine["hourly_usage"] == team_a["hourly_usage"]
    assert mine["route_shares"] == team_a["route_shares"]
    assert mine["costs"] == team_a["costs"]
    assert [row["team_id"] for row in mine["costs"]["team"]["rows"]] == ["team-a"]
    assert mine["costs"]["model"]["totals"] == everything["costs"]["model"]["totals"]  # b: none
    assert mine["overview"]["total_calls"] == 28 < everything["overview"]["total_calls"] == 37
    assert {t["team_id"] for t in mine["top_tokens"]} == {"team-a"}
    await _json(viewer, "/usage-analytics.json?team_id=team-b", 404)

    dashboard = await _json(viewer, "/index.json")
    assert dashboard["week"]["total_calls"] == 28
    assert [t["name"] for t in dashboard["week"]["top_tokens"]] == ["Prod bot"]
    assert [r["route_path"] for r in dashboard["week"]["top_routes"]] == ["/api/openai"]

    tokens = await _json(viewer, "/tokens.json")
    assert [(t["name"], t["call_count"]) for t in tokens["tokens"]] == [("Prod bot", 28)]
    assert tokens["team_budgets"] == []  # no team has a budget yet
    await _json(viewer, f"/tokens/{stage.tokens['b'].token.id}.json", 404)
    token_a = await _json(viewer, f"/tokens/{stage.tokens['a'].token.id}.json")
    assert token_a["stats"]["total_calls"] == 28

    routes = await _json(viewer, "/routes.json")
    assert {r["path_prefix"]: r["call_count"] for r in routes["routes"]} == {
        "/api/openai": 28,
        "/api/aws": 0,
    }
    route_b = await _json(viewer, f"/routes/{stage.route_ids['b']}.json")
    assert route_b["stats"]["total_calls"] == 0
    assert route_b["token_distribution"] == []
    route_b_all = await _json(admin, f"/routes/{stage.route_ids['b']}.json")
    assert route_b_all["stats"]["total_calls"] == 9
    assert {t["name"] for t in route_b_all["token_distribution"]} == {"Batch job", "unknown token"}

    await _json(viewer, "/audit.json", 403)
    assert len((await _json(admin, "/audit.json"))["entries"]) > 0


async def test_viewers_see_only_their_teams_budgets(
    clients: dict[str, httpx.AsyncClient], services: Services, admin: Actor
) -> None:
    for team_id in ("team-a", "team-b"):
        await services.teams.update(admin, team_id, {"budget_usd": "10"})
    mine = await _json(clients["viewer"], "/tokens.json")
    everything = await _json(clients["admin"], "/tokens.json")
    assert [b["team_id"] for b in mine["team_budgets"]] == ["team-a"]
    assert [b["team_id"] for b in everything["team_budgets"]] == ["team-a", "team-b"]
    assert mine["team_budgets"][0] == everything["team_budgets"][0]
    assert mine["team_budgets"][0]["budget"]["budget_usd"] == "10"


async def test_viewer_pages_never_name_other_teams_tokens(
    clients: dict[str, httpx.AsyncClient], stage: Stage
) -> None:
    viewer = clients["viewer"]
    paths = ["/", "/usage-analytics", "/tokens", "/routes", f"/routes/{stage.route_ids['b']}"]
    for path in paths:
        answer = await viewer.get(path)
        assert answer.status_code == 200, path
        assert "Batch job" not in answer.text, path
        assert "unknown token" not in answer.text, path
    assert (await viewer.get(f"/tokens/{stage.tokens['b'].token.id}")).status_code == 404
    assert (await viewer.get("/audit")).status_code == 403
