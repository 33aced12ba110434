"""Each chart draws its page's `.json` twin: the series read back from the ECharts instances
(echarts.getInstanceByDom) equal the twin's figures, point for point."""

from __future__ import annotations

from typing import Any

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services

from .conftest import (
    BrowserWatch,
    build_stage,
    chart_option,
    open_context,
    sign_in,
    wait_for_charts,
)

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def _page_and_twin(page: Any, path: str, twin_path: str) -> tuple[dict[str, Any], Any]:
    await page.goto(path)
    await wait_for_charts(page)
    answer = await page.request.get(twin_path)
    assert answer.status == 200
    return await answer.json(), page


async def test_charts_show_exactly_their_twins(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    stage = await build_stage(services, admin)
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])

    twin, _ = await _page_and_twin(page, "/usage-analytics", "/usage-analytics.json")
    assert twin["overview"]["total_calls"] == 24 + 8 + 4 + 1
    trend = await chart_option(page, "usage-trend")
    points = twin["hourly_usage"]
    assert [s["name"] for s in trend["series"]] == ["Calls", "Average ms", "p95"]
    assert trend["series"][0]["data"] == [p["call_count"] for p in points]
    assert trend["series"][1]["data"] == [p["avg_response_time"] for p in points]
    assert trend["series"][2]["data"] == [p["p95_response_time"] for p in points]
    assert [axis["type"] for axis in trend["yAxis"]] == ["value", "value"]  # dual axis
    pie = await chart_option(page, "route-share")
    assert pie["series"][0]["data"] == [
        {"name": s["route_path"], "value": s["call_count"]} for s in twin["route_shares"]
    ]
    assert round(sum(s["percent"] for s in twin["route_shares"])) == 100
    assert await page.locator("[data-kpi=total_calls] .kpi-value").text_content() == "37"

    twin, _ = await _page_and_twin(page, "/", "/index.json")
    small = await chart_option(page, "dashboard-trend")
    assert small["series"][0]["data"] == [p["call_count"] for p in twin["trend"]["hourly_usage"]]
    assert sum(small["series"][0]["data"]) == 37
    assert [t["name"] for t in twin["week"]["top_tokens"]] == [
        "Prod bot", "Batch job", "unknown token",
    ]  # fmt: skip

    token_id = stage.tokens["a"].token.id
    twin, _ = await _page_and_twin(page, f"/tokens/{token_id}", f"/tokens/{token_id}.json")
    routes = await chart_option(page, "token-routes")
    assert routes["series"][0]["data"] == [r["call_count"] for r in twin["route_distribution"]]
    assert routes["yAxis"][0]["data"] == ["/api/openai"]
    heatmap = await chart_option(page, "token-heatmap")
    cells = {(hour, day): count for hour, day, count in heatmap["series"][0]["data"]}
    matrix = twin["time_profile"]["calls"]
    assert cells == {(h, d): matrix[d][h] for d in range(7) for h in range(24)}
    assert sum(cells.values()) == 28
    assert await page.locator("#recent-calls tbody tr").count() == 28

    route_id = stage.route_ids["a"]
    twin, _ = await _page_and_twin(page, f"/routes/{route_id}", f"/routes/{route_id}.json")
    tokens = await chart_option(page, "route-tokens")
    assert tokens["series"][0]["data"] == [t["usage_count"] for t in twin["token_distribution"]]
    assert tokens["yAxis"][0]["data"] == ["Prod bot"]
    latency = await chart_option(page, "route-latency")
    for series, key in zip(
        latency["series"], ("p50_response_time", "p95_response_time"), strict=True
    ):
        assert series["data"] == [p[key] for p in twin["latency_trend"]]
    assert await page.locator("#errors-by-status", has_text="500").count() == 1
    assert await page.locator("#top-messages", has_text="upstream timed out").count() == 1
    watch.assert_clean()
    await context.close()
