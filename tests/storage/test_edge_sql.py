"""The edge sync's SQL on both databases: token rows with their team's limits, all or by id."""

from __future__ import annotations

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.storage import edge as edge_sql


async def test_token_rows_carry_team_limits_and_filter_by_id(
    services: Services, admin: Actor
) -> None:
    await services.teams.create(admin, team_id="t1", name="T1")
    first = await services.tokens.issue(admin, name="a", team_id="t1", scopes=["x"])
    second = await services.tokens.issue(
        admin, name="b", team_id="t1", scopes=[], rate_limit_per_min=60
    )
    async with services.database.read() as connection:
        every = await edge_sql.list_edge_token_rows(connection)
        some = await edge_sql.list_edge_token_rows(connection, {second.token.id})
        none = await edge_sql.list_edge_token_rows(connection, set())
        routes = await edge_sql.list_edge_route_rows(connection)
    assert [row.id for row in every] == [first.token.id, second.token.id]
    assert [(row.id, row.rate_limit_per_min) for row in some] == [(second.token.id, 60)]
    assert none == []
    assert routes == []
    assert every[0].team_rate_limit_per_min is None
    assert list(every[0].scopes) == ["x"]
