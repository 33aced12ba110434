"""The dashboard's money: the cost KPI, the tokens-over-time chart and the cost tables of
/usage-analytics show exactly what the API answers (decimal strings, "unknown" with a tooltip
for calls without a price, never 0); budget bars on the token page and the team budgets on
/tokens; the prices page, where admins set and remove prices with the CSRF token and viewers
only read."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.calendar import period_bounds
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.pricing.money import format_usd
from tokenmanager.tokens.codec import hash_token

from .conftest import (
    UNPRICED_MODEL,
    BrowserWatch,
    Stage,
    build_stage,
    chart_option,
    goto,
    open_context,
    sign_in,
    wait_for_charts,
)

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def _json(page: Any, path: str) -> Any:
    answer = await page.request.get(path)
    assert answer.status == 200, path
    return await answer.json()


def _spent_pusd(stage: Stage, key: str, period: str) -> int:
    """What token `key` spent in the current calendar `period` (UTC), from the stage's events."""
    start, end = period_bounds(period, utcnow(), UTC)
    token_hash = hash_token(stage.tokens[key].token_secret)
    return sum(
        event.cost_pusd
        for event in stage.events
        if event.token_hash == token_hash
        and event.cost_pusd is not None
        and start <= event.used_at < end
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_cost_kpi_token_trend_and_cost_tables_show_the_api_figures(
    scheme: str,
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    stage = await build_stage(services, admin)
    context = await open_context(browser, control_plane, watch, color_scheme=scheme)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    await goto(page, "/usage-analytics")
    await wait_for_charts(page)

    stats = await _json(page, "/api/usage/stats?window=24h")
    overview = stats["overview"]
    assert overview["cost_usd"] is not None
    assert overview["unpriced_calls"] == 1
    kpi = await page.locator("[data-kpi=cost_usd] .kpi-value").inner_text()
    assert kpi.strip() == "≥ " + overview["cost_usd"]  # a lower bound: one call had no price
    title = await page.locator("[data-kpi=cost_usd] .money").get_attribute("title")
    assert title is not None
    assert "1" in title

    twin = await _json(page, "/usage-analytics.json")
    trend = await chart_option(page, "token-trend")
    assert [s["name"] for s in trend["series"]] == ["Prompt tokens", "Completion tokens"]
    assert trend["series"][0]["data"] == [p["prompt_tokens"] for p in twin["hourly_usage"]]
    assert trend["series"][1]["data"] == [p["completion_tokens"] for p in twin["hourly_usage"]]
    llm_events = [e for e in stage.events if e.prompt_tokens is not None]
    assert sum(trend["series"][0]["data"]) == sum(e.prompt_tokens or 0 for e in llm_events)
    assert sum(trend["series"][1]["data"]) == sum(e.completion_tokens or 0 for e in llm_events)

    by_model = await _json(page, "/api/usage/costs?window=24h&group_by=model")
    rows = page.locator("#cost-by-model tbody tr")
    assert await rows.count() == len(by_model["rows"]) == 2
    for index, row in enumerate(by_model["rows"]):
        cells = rows.nth(index).locator("td")
        assert await cells.nth(0).inner_text() == row["model"]
        assert await cells.nth(1).inner_text() == str(row["calls"])
        assert await cells.nth(2).inner_text() == f"{row['prompt_tokens']:,}"
        cost = cells.nth(4).locator(".money")
        if row["cost_usd"] is None:
            assert row["model"] == UNPRICED_MODEL
            assert await cost.inner_text() == "unknown"  # never 0
            assert "no price" in (await cost.get_attribute("title") or "")
        else:
            assert row["model"] == stage.names["model"]
            assert await cost.inner_text() == row["cost_usd"]
            expected = sum(e.cost_pusd or 0 for e in llm_events if e.model == row["model"])
            assert row["cost_usd"] == format_usd(expected)

    for group_by, table in (("team", "#cost-by-team"), ("token", "#cost-by-token")):
        answer = await _json(page, f"/api/usage/costs?window=24h&group_by={group_by}")
        texts = await page.locator(f"{table} tbody tr td:nth-child(5)").all_inner_texts()
        assert [text.strip() for text in texts] == [
            ("≥ " if row["unpriced_calls"] else "") + row["cost_usd"] for row in answer["rows"]
        ]
    assert await page.locator("#cost-by-token a").first.get_attribute("href") == (
        f"/tokens/{stage.tokens['a'].token.id}"
    )
    watch.assert_clean()

    # Traditional Chinese: the same strings, the labels translated.
    await goto(page, "/usage-analytics?lang=zh-TW")
    await wait_for_charts(page)
    assert "費用" in await page.locator("[data-kpi=cost_usd]").inner_text()
    unknown = page.locator("#cost-by-model .money.unknown")
    assert await unknown.inner_text() == "未知"
    watch.assert_clean()
    await context.close()


async def test_budget_bars_on_the_token_page_and_team_budgets_on_tokens(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
    screenshot_dir: Path,
) -> None:
    stage = await build_stage(services, admin)
    token_a = stage.tokens["a"].token.id
    await services.tokens.update(admin, token_a, {"budget_usd": "0.004"})
    await services.teams.update(admin, "team-a", {"budget_usd": "2.5", "budget_period": "day"})
    spent_month = _spent_pusd(stage, "a", "month")
    spent_day = _spent_pusd(stage, "a", "day")  # team-a's only spender is token a
    assert spent_month > 0
    context = await open_context(browser, control_plane, watch, color_scheme="dark")
    page = await context.new_page()
    await sign_in(page, *users["admin"])

    await goto(page, f"/tokens/{token_a}")
    await wait_for_charts(page)
    bar = page.locator("#token-budget")
    text = await bar.inner_text()
    percent = spent_month * 100 // (4000 * 10**6)
    assert f"{format_usd(spent_month)} of 0.004 USD spent this month ({percent}%)" in text
    assert await bar.get_attribute("data-percent") == str(percent)
    assert await bar.locator("progress").get_attribute("value") == str(min(percent, 100))
    start, end = period_bounds("month", utcnow(), UTC)
    times = await bar.locator("time").evaluate_all("ts => ts.map(t => t.dateTime)")
    assert times == [start.isoformat(), end.isoformat()]
    await page.screenshot(path=str(screenshot_dir / "budget-dark-token.png"), full_page=True)
    twin = await _json(page, f"/tokens/{token_a}.json")
    assert twin["budget"]["spent_usd"] == format_usd(spent_month)
    assert twin["budget"]["budget_usd"] == "0.004"
    kpi = await page.locator("[data-kpi=cost_usd] .money").inner_text()
    assert kpi.strip() == "≥ " + twin["stats"]["cost_usd"]
    # The recent calls show each call's model and cost; the unpriced one is unknown.
    calls = page.locator("#recent-calls tbody")
    assert UNPRICED_MODEL in await calls.inner_text()
    assert await calls.locator(".money.unknown").count() == 1

    await goto(page, f"/tokens/{stage.tokens['b'].token.id}")
    assert await page.locator("#token-budget").inner_text() == "no budget"

    await goto(page, "/tokens")
    await page.screenshot(path=str(screenshot_dir / "budget-dark-tokens.png"), full_page=True)
    rows = page.locator("#team-budgets tbody tr")
    assert await rows.count() == 1  # team-b has no budget
    team_text = await page.locator("#team-budgets tr[data-team-id=team-a]").inner_text()
    day_percent = spent_day * 100 // (2_500_000 * 10**6)
    assert f"{format_usd(spent_day)} of 2.5 USD spent this day ({day_percent}%)" in team_text
    tokens_twin = await _json(page, "/tokens.json")
    assert tokens_twin["team_budgets"][0]["budget"]["spent_usd"] == format_usd(spent_day)
    assert [t["budget_usd"] for t in tokens_twin["tokens"] if t["id"] == token_a] == ["0.004"]

    await goto(page, f"/tokens/{token_a}?lang=zh-TW")
    assert "本月已花費" in await page.locator("#token-budget").inner_text()
    watch.assert_clean()
    await context.close()


async def test_admin_sets_and_removes_prices_with_csrf(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    await page.click("nav a[href='/prices']")
    await page.wait_for_url("**/prices")
    default = page.locator("#prices tr[data-model='gpt-4o-mini']")
    assert "0.15" in await default.inner_text()
    assert (await default.locator(".source").inner_text()).startswith("default")
    assert "shipped default" in await default.inner_text()

    # More than 6 decimals: refused, the typed values shown again.
    await page.fill("#price-form input[name=model]", "house-model")
    await page.fill("#price-form input[name=input_usd_per_mtok]", "0.1234567")
    await page.fill("#price-form input[name=output_usd_per_mtok]", "1")
    async with page.expect_navigation():
        await page.click("#price-form button[type=submit]")
    assert "input_usd_per_mtok" in await page.locator("p.error").inner_text()
    assert await page.input_value("#price-form input[name=model]") == "house-model"
    assert [error for error in watch.console_errors if "422" in error] == watch.console_errors
    watch.console_errors.clear()  # the browser logs the refused POST's 422 status

    await page.fill("#price-form input[name=input_usd_per_mtok]", "0.123456")
    await page.fill("#price-form input[name=output_usd_per_mtok]", "12.5")
    async with page.expect_navigation():
        await page.click("#price-form button[type=submit]")
    row = page.locator("#prices tr[data-model='house-model']")
    cells = await row.locator("td").all_inner_texts()
    assert cells[:5] == ["house-model", "0.123456", "12.5", "as input", "admin"]
    effective = await row.locator("time").get_attribute("datetime")
    api_prices = await _json(page, "/api/prices")
    api_row = next(p for p in api_prices if p["model"] == "house-model")
    assert api_row["input_usd_per_mtok"] == "0.123456"
    assert api_row["output_usd_per_mtok"] == "12.5"
    assert api_row["effective_from"] is not None
    assert effective is not None

    # Without the CSRF token nothing changes.
    csrf_token = await page.locator("form.logout input[name=csrf_token]").input_value()
    for path, form in (
        ("/prices", {"model": "forged", "input_usd_per_mtok": "1", "output_usd_per_mtok": "1"}),
        ("/prices/remove", {"model": "house-model"}),
    ):
        assert (await page.request.post(path, form=form)).status == 403
        assert (await page.request.post(path, form={**form, "csrf_token": "0" * 64})).status == 403
    models = [p["model"] for p in await _json(page, "/api/prices")]
    assert "forged" not in models
    assert "house-model" in models

    # Remove (htmx, after the confirmation): the price and a shipped default both go.
    watch.accept_dialogs = True
    for model in ("house-model", "gpt-4o"):
        async with page.expect_navigation():
            await page.click(f"#prices tr[data-model='{model}'] button.remove")
        assert await page.locator(f"#prices tr[data-model='{model}']").count() == 0
    assert len(watch.dialogs) == 2
    watch.dialogs.clear()
    models = [p["model"] for p in await _json(page, "/api/prices")]
    assert "house-model" not in models
    assert "gpt-4o" not in models
    assert "gpt-4o-mini" in models  # a dated snapshot's own default, not a prefix of gpt-4o
    audit = await _json(page, "/audit.json?target_type=price")
    assert sorted(e["action"] for e in audit["entries"]) == [
        "price.remove", "price.remove", "price.set",
    ]  # fmt: skip
    removed = await page.request.post(
        "/prices/remove", form={"model": "house-model", "csrf_token": csrf_token}
    )
    assert removed.status == 404  # nothing left to remove
    watch.assert_clean()
    await context.close()


async def test_a_viewer_reads_prices_but_cannot_change_them(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["viewer"])
    assert "/prices" in await page.locator("nav").inner_html()
    await goto(page, "/prices")
    assert await page.locator("#prices tr[data-model='gpt-4o-mini']").count() == 1
    assert await page.locator("#price-form, button.remove").count() == 0
    assert "Only admins" in await page.locator("main").inner_text()
    csrf_token = await page.locator("form.logout input[name=csrf_token]").input_value()
    form = {"model": "x", "input_usd_per_mtok": "1", "output_usd_per_mtok": "1"}
    assert (
        await page.request.post("/prices", form={**form, "csrf_token": csrf_token})
    ).status == 403
    refused = await page.request.post(
        "/prices/remove", form={"model": "gpt-4o-mini", "csrf_token": csrf_token}
    )
    assert refused.status == 403
    assert "gpt-4o-mini" in [p["model"] for p in await _json(page, "/api/prices")]
    watch.assert_clean()
    await context.close()
