"""Budgets on tokens and teams over HTTP: exact decimal strings, the "month" default, partial
changes, 422 for bad input with nothing changed, viewers on their own tokens only, admins only
on teams, audit entries, the change feed (kind "team" included) and the gateway's token record.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tokenmanager.composition import Services
from tokenmanager.storage.gateway import read_token_by_hash
from tokenmanager.storage.schema import change_feed
from tokenmanager.tokens.codec import hash_token

from .answers import audit_entries, expect_error, get_json

Client = httpx.AsyncClient
Headers = dict[str, str]


async def issue(client: Client, headers: Headers, **fields: Any) -> httpx.Response:
    body = {"name": "ci", "team_id": "team-a"} | fields
    return await client.post("/api/tokens", json=body, headers=headers)


def budget_of(thing: dict[str, Any]) -> tuple[str | None, str | None]:
    return thing["budget_usd"], thing["budget_period"]


async def changes_of_kind(services: Services, kind: str) -> list[str]:
    async with services.database.read() as connection:
        query = sa.select(change_feed.c.key).where(change_feed.c.kind == kind)
        return [str(key) for key in (await connection.execute(query)).scalars()]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, (None, None)),
        ({"budget_usd": "12.5"}, ("12.5", "month")),
        ({"budget_usd": 0.1, "budget_period": "day"}, ("0.1", "day")),
        ({"budget_usd": "0.000001", "budget_period": "month"}, ("0.000001", "month")),
        ({"budget_usd": 0}, ("0", "month")),
        ({"budget_usd": "1000000.00"}, ("1000000", "month")),
        ({"budget_usd": None, "budget_period": None}, (None, None)),
    ],
    ids=["none", "month-default", "day", "micro", "zero", "max", "nulls"],
)
async def test_issue_with_a_budget_answers_it_as_an_exact_string(
    app_client: Client,
    admin_headers: Headers,
    teams: tuple[str, str],
    fields: dict[str, Any],
    expected: tuple[str | None, str | None],
) -> None:
    answer = await issue(app_client, admin_headers, **fields)

    assert answer.status_code == 201, answer.text
    assert budget_of(answer.json()) == expected
    read = await get_json(app_client, admin_headers, f"/api/tokens/{answer.json()['id']}")
    assert budget_of(read) == expected


BAD_BUDGETS = [
    ({"budget_usd": "0.0000001"}, "budget_usd"),
    ({"budget_usd": -1}, "budget_usd"),
    ({"budget_usd": "NaN"}, "budget_usd"),
    ({"budget_usd": "-Infinity"}, "budget_usd"),
    ({"budget_usd": "1000000.000001"}, "budget_usd"),
    ({"budget_usd": True}, "budget_usd"),
    ({"budget_usd": "lots"}, "budget_usd"),
    ({"budget_usd": "5", "budget_period": "week"}, "budget_period"),
    ({"budget_usd": "5", "budget_period": "Month"}, "budget_period"),
    ({"budget_micro_usd": 5}, "budget_micro_usd"),
]
BAD_BUDGET_IDS = [
    "seven-decimals", "negative", "nan", "infinity", "too-large", "bool", "text", "week",
    "period-case", "stored-column",
]  # fmt: skip


@pytest.mark.parametrize(("fields", "named"), BAD_BUDGETS, ids=BAD_BUDGET_IDS)
async def test_issue_with_a_bad_budget_gets_422_and_issues_nothing(
    app_client: Client,
    admin_headers: Headers,
    teams: tuple[str, str],
    fields: dict[str, Any],
    named: str,
) -> None:
    expect_error(await issue(app_client, admin_headers, **fields), 422, named)
    assert await get_json(app_client, admin_headers, "/api/tokens") == []


async def test_issue_with_a_period_but_no_budget_gets_422(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str]
) -> None:
    answer = await issue(app_client, admin_headers, budget_period="day")

    expect_error(answer, 422, "budget_period")
    assert await get_json(app_client, admin_headers, "/api/tokens") == []


async def test_token_budget_changes_are_partial_audited_and_announced(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str], services: Services
) -> None:
    token = (await issue(app_client, admin_headers, budget_usd="10", budget_period="day")).json()
    path = f"/api/tokens/{token['id']}"

    async def patch(body: dict[str, Any]) -> tuple[str | None, str | None]:
        answer = await app_client.patch(path, json=body, headers=admin_headers)
        assert answer.status_code == 200, answer.text
        return budget_of(answer.json())

    assert await patch({"budget_usd": "25.75"}) == ("25.75", "day")  # the period stays
    assert await patch({"budget_period": "month"}) == ("25.75", "month")  # the amount stays
    assert await patch({"name": "renamed"}) == ("25.75", "month")
    assert await patch({"budget_usd": None}) == (None, None)  # null removes it
    assert await patch({"budget_usd": 3}) == ("3", "month")  # no period yet: month

    entries = await audit_entries(
        app_client, admin_headers, action="token.update", target_id=str(token["id"])
    )
    assert [
        (e["before"]["budget_micro_usd"], e["after"]["budget_micro_usd"]) for e in entries
    ] == [(None, 3_000_000), (25_750_000, None), (25_750_000, 25_750_000),
          (25_750_000, 25_750_000), (10_000_000, 25_750_000)]  # fmt: skip
    assert entries[-2]["after"]["budget_period"] == "month"
    assert (await changes_of_kind(services, "token")).count(str(token["id"])) == 6


@pytest.mark.parametrize(
    ("body", "named"),
    [
        *BAD_BUDGETS,
        ({"budget_period": None}, "budget_period"),
        ({"budget_usd": None, "budget_period": "day"}, "budget_period"),
    ],
    ids=[*BAD_BUDGET_IDS, "null-period-with-budget", "period-without-budget"],
)
async def test_bad_budget_changes_get_422_and_change_nothing(
    app_client: Client,
    admin_headers: Headers,
    teams: tuple[str, str],
    body: dict[str, Any],
    named: str,
) -> None:
    token = (await issue(app_client, admin_headers, budget_usd="10")).json()
    path = f"/api/tokens/{token['id']}"
    before = await get_json(app_client, admin_headers, path)

    expect_error(await app_client.patch(path, json=body, headers=admin_headers), 422, named)
    assert await get_json(app_client, admin_headers, path) == before


async def test_a_period_alone_on_a_token_without_budget_gets_422(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str]
) -> None:
    token = (await issue(app_client, admin_headers)).json()

    answer = await app_client.patch(
        f"/api/tokens/{token['id']}", json={"budget_period": "day"}, headers=admin_headers
    )

    expect_error(answer, 422, "budget_period")


async def test_member_sets_budgets_on_their_teams_tokens_only(
    app_client: Client, admin_headers: Headers, member_headers: Headers
) -> None:
    mine = await issue(app_client, member_headers, budget_usd="5", budget_period="day")
    assert mine.status_code == 201, mine.text
    assert budget_of(mine.json()) == ("5", "day")
    changed = await app_client.patch(
        f"/api/tokens/{mine.json()['id']}", json={"budget_usd": "7"}, headers=member_headers
    )
    assert budget_of(changed.json()) == ("7", "day")

    theirs = (await issue(app_client, admin_headers, team_id="team-b")).json()
    expect_error(
        await app_client.patch(
            f"/api/tokens/{theirs['id']}", json={"budget_usd": "1"}, headers=member_headers
        ),
        404,
    )
    expect_error(await issue(app_client, member_headers, team_id="team-b", budget_usd="1"), 404)
    read = await get_json(app_client, admin_headers, f"/api/tokens/{theirs['id']}")
    assert budget_of(read) == (None, None)


async def test_a_viewer_cannot_set_a_budget(
    app_client: Client, admin_headers: Headers, viewer_headers: Headers
) -> None:
    token = (await issue(app_client, admin_headers)).json()
    expect_error(
        await app_client.patch(
            f"/api/tokens/{token['id']}", json={"budget_usd": "1"}, headers=viewer_headers
        ),
        403,
    )
    assert budget_of(await get_json(app_client, admin_headers, f"/api/tokens/{token['id']}")) == (
        None,
        None,
    )


# Teams


async def test_admin_sets_changes_and_removes_a_team_budget_and_gateways_hear_of_it(
    app_client: Client, admin_headers: Headers, services: Services
) -> None:
    created = await app_client.post(
        "/api/teams",
        json={"id": "ml-team", "name": "ML", "budget_usd": "500"},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    assert budget_of(created.json()) == ("500", "month")

    async def patch(body: dict[str, Any]) -> dict[str, Any]:
        answer = await app_client.patch("/api/teams/ml-team", json=body, headers=admin_headers)
        assert answer.status_code == 200, answer.text
        team: dict[str, Any] = answer.json()
        return team

    assert budget_of(await patch({"budget_usd": 20.5, "budget_period": "day"})) == ("20.5", "day")
    assert (await patch({"rate_limit_per_s": 5}))["rate_limit_per_s"] == 5
    assert budget_of(await patch({"budget_usd": None})) == (None, None)
    assert budget_of(await get_json(app_client, admin_headers, "/api/teams/ml-team")) == (
        None,
        None,
    )

    # Each change, rate limits included, tells the gateways to drop this team's tokens.
    assert await changes_of_kind(services, "team") == ["ml-team"] * 3
    entries = await audit_entries(app_client, admin_headers, action="team.update")
    assert [(e["before"]["budget_micro_usd"], e["after"]["budget_micro_usd"]) for e in entries] == [
        (20_500_000, None),
        (20_500_000, 20_500_000),
        (500_000_000, 20_500_000),
    ]
    assert entries[-1]["after"]["budget_period"] == "day"


@pytest.mark.parametrize(("fields", "named"), BAD_BUDGETS, ids=BAD_BUDGET_IDS)
async def test_bad_team_budgets_get_422_and_change_nothing(
    app_client: Client,
    admin_headers: Headers,
    teams: tuple[str, str],
    fields: dict[str, Any],
    named: str,
) -> None:
    before = await get_json(app_client, admin_headers, "/api/teams/team-a")

    patched = await app_client.patch("/api/teams/team-a", json=fields, headers=admin_headers)
    created = await app_client.post(
        "/api/teams", json={"id": "new-team", "name": "New"} | fields, headers=admin_headers
    )

    expect_error(patched, 422, named)
    expect_error(created, 422, named)
    assert await get_json(app_client, admin_headers, "/api/teams/team-a") == before
    expect_error(await app_client.get("/api/teams/new-team", headers=admin_headers), 404)


async def test_viewer_cannot_set_a_team_budget(
    app_client: Client, admin_headers: Headers, viewer_headers: Headers
) -> None:
    answer = await app_client.patch(
        "/api/teams/team-a", json={"budget_usd": "1"}, headers=viewer_headers
    )

    expect_error(answer, 403)
    team = await get_json(app_client, admin_headers, "/api/teams/team-a")
    assert budget_of(team) == (None, None)
    assert budget_of(await get_json(app_client, viewer_headers, "/api/teams/team-a")) == (
        None,
        None,
    )


async def test_the_gateways_token_record_carries_token_and_team_budgets(
    app_client: Client, admin_headers: Headers, teams: tuple[str, str], services: Services
) -> None:
    await app_client.patch(
        "/api/teams/team-a",
        json={"budget_usd": "100", "budget_period": "day"},
        headers=admin_headers,
    )
    issued = (await issue(app_client, admin_headers, budget_usd="2.5")).json()

    async with services.database.read() as connection:
        record = await read_token_by_hash(connection, hash_token(issued["token"]))

    assert (record.budget_micro_usd, record.budget_period) == (2_500_000, "month")
    assert (record.team_budget_micro_usd, record.team_budget_period) == (100_000_000, "day")
