"""`/security`: findings the real detectors produced from recorded usage, listed with their
evidence (the evidence charts equal the `.json` twin), acknowledged and resolved by an admin
(audited, CSRF-protected), scoped to a viewer's teams, and linked from the dashboard, the nav
and the token and route pages; in English and Traditional Chinese."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.security.detectors import floor_time
from tokenmanager.tokens.codec import hash_token
from tokenmanager.tokens.models import IssuedToken
from tokenmanager.usage.events import UsageEvent

from .conftest import (
    BrowserWatch,
    goto,
    open_context,
    sign_in,
    usage_event,
    wait_for_charts,
    write_usage,
)

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

FLAKY_ROUTE = "/api/flaky"
STUFFING_IP = "185.220.101.7"
SPIKE_CALLS = 40
SPIKE_ERRORS = 20


@dataclass
class Findings:
    """The detectors' findings by what they are about: `revoked` by team, plus the
    credential-stuffing burst from one address and the route's error spike."""

    revoked: dict[str, int]
    revoked_tokens: dict[str, int]
    stuffing: int
    route_spike: int
    route_id: int


def _refused(
    issued: IssuedToken | None, used_at: datetime, failure_kind: str, ip: str
) -> UsageEvent:
    """A call the gateway refused with 401, as it records one."""
    return UsageEvent(
        token_hash=hash_token(issued.token_secret) if issued else "",
        token_id=issued.token.id if issued else None,
        route_path=None,
        used_at=used_at,
        response_status=401,
        response_time_ms=1,
        ip_address=ip,
        request_method="GET",
        failure_kind=failure_kind,
    )


def _route_error_spike(issued: IssuedToken, now: datetime) -> list[UsageEvent]:
    """Five days of clean calls on the route (its baseline), then a 15-minute detector window
    of the last hour in which half the calls fail with 500."""
    history = [
        usage_event(issued, FLAKY_ROUTE, minutes_ago=2 * 1440 + index * 30, now=now)
        for index in range(200)
    ]
    latest = now - timedelta(seconds=60)  # well inside the slice the detectors read
    window = floor_time(latest, 900)
    if latest - window < timedelta(seconds=120):
        window -= timedelta(seconds=900)
    span = min(latest - window, timedelta(seconds=899))
    spike = [
        UsageEvent(
            token_hash=hash_token(issued.token_secret),
            route_path=FLAKY_ROUTE,
            used_at=window + span * (index + 1) / (SPIKE_CALLS + 1),
            response_status=500 if index % 2 else 200,
            response_time_ms=120,
            request_method="POST",
        )
        for index in range(SPIKE_CALLS)
    ]
    return history + spike


@pytest.fixture
async def findings(services: Services, admin: Actor, users: dict[str, tuple[str, str]]) -> Findings:
    """Usage stored the way the recorder stores it, then the detectors run over it."""
    now = utcnow()
    route = await services.routes.create(
        admin, path_prefix=FLAKY_ROUTE, upstream_url="http://127.0.0.1:9/flaky"
    )
    route_bot = await services.tokens.issue(admin, name="route bot", team_id="team-a")
    events = [
        _refused(None, now - timedelta(seconds=90 - i), "not_found", STUFFING_IP) for i in range(30)
    ]
    revoked_tokens = {}
    for team_id in ("team-a", "team-b"):
        issued = await services.tokens.issue(admin, name=f"{team_id} old bot", team_id=team_id)
        await services.tokens.revoke(admin, issued.token.id)
        revoked_tokens[team_id] = issued.token.id
        events += [
            _refused(issued, now - timedelta(minutes=5, seconds=i), "revoked", "198.51.100.4")
            for i in range(3)
        ]
    events += _route_error_spike(route_bot, now)
    await write_usage(services, sorted(events, key=lambda event: event.used_at))
    monitor = services.security.monitor
    await monitor.start_at(now - timedelta(hours=1))
    await monitor.run_until_caught_up(now)

    produced, total = await services.security.findings.list(admin, limit=100)
    assert total == 4, [(f.kind, f.token_id, f.route_path) for f in produced]
    by_kind: dict[str, list[Any]] = {}
    for finding in produced:
        by_kind.setdefault(finding.kind, []).append(finding)
    return Findings(
        revoked={f.team_id: f.id for f in by_kind["revoked_token_use"]},
        revoked_tokens=revoked_tokens,
        stuffing=by_kind["auth_failure_burst"][0].id,
        route_spike=by_kind["route_error_spike"][0].id,
        route_id=route.id,
    )


async def _json(page: Any, path: str) -> Any:
    answer = await page.request.get(path)
    assert answer.status == 200, path
    return await answer.json()


async def _evidence_chart(page: Any, finding_id: int) -> dict[str, Any]:
    """The categories and values ECharts holds for one finding's evidence chart."""
    chart: dict[str, Any] = await page.evaluate(
        """(id) => {
            const element = document.querySelector(
                `[data-chart="finding-evidence"][data-finding="${id}"]`);
            const option = echarts.getInstanceByDom(element).getOption();
            return {categories: option.xAxis[0].data, values: option.series[0].data};
        }""",
        finding_id,
    )
    return chart


async def _shown_ids(page: Any) -> list[int]:
    ids = await page.locator("section.finding").evaluate_all(
        "(sections) => sections.map(s => Number(s.dataset.findingId))"
    )
    return list(ids)


@pytest.mark.parametrize(
    ("language", "texts"),
    [
        ("en", {"revoked_token_use": "Revoked token presented", "count": "count"}),
        ("zh-TW", {"revoked_token_use": "使用已撤銷的權杖", "count": "次數"}),
    ],
)
async def test_findings_are_listed_with_evidence_charts_equal_to_the_twin(
    browser: Any,
    control_plane: str,
    users: dict[str, tuple[str, str]],
    findings: Findings,
    watch: BrowserWatch,
    language: str,
    texts: dict[str, str],
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    await goto(page, f"/security?lang={language}")
    await wait_for_charts(page)

    twin = await _json(page, "/security.json")
    api = await _json(page, "/api/security/findings?status=open")
    assert twin["filters"]["status"] == "open"
    assert [f["id"] for f in twin["findings"]] == [f["id"] for f in api["findings"]]
    assert [f["evidence"] for f in twin["findings"]] == [f["evidence"] for f in api["findings"]]
    assert twin["total"] == 4
    assert await _shown_ids(page) == [f["id"] for f in twin["findings"]]

    for team_id, finding_id in findings.revoked.items():
        row = page.locator(f"section.finding[data-finding-id='{finding_id}']")
        token_id = findings.revoked_tokens[team_id]
        assert await row.locator("a.token-link").get_attribute("href") == f"/tokens/{token_id}"
        assert texts["revoked_token_use"] in await row.locator("h2").inner_text()
    route_row = page.locator(f"section.finding[data-finding-id='{findings.route_spike}']")
    route_link = route_row.locator("a.route-link")
    assert await route_link.get_attribute("href") == f"/routes/{findings.route_id}"
    assert await route_link.inner_text() == FLAKY_ROUTE
    stuffing_row = page.locator(f"section.finding[data-finding-id='{findings.stuffing}']")
    assert STUFFING_IP in await stuffing_row.inner_text()

    labels = {"count": texts["count"]}
    for finding in twin["findings"]:
        chart = await _evidence_chart(page, finding["id"])
        bars = finding["evidence_chart"]
        assert chart["values"] == [bar["value"] for bar in bars], finding["kind"]
        assert len(chart["categories"]) == len(bars)
        evidence = finding["evidence"]
        assert bars[0]["value"] in (evidence.get("error_rate"), evidence.get("count"))
    by_id = {f["id"]: f for f in twin["findings"]}
    assert [(b["key"], b["value"]) for b in by_id[findings.stuffing]["evidence_chart"]] == [
        ("count", 30),
        ("threshold", 20),
    ]
    spike = by_id[findings.route_spike]["evidence"]
    assert spike["error_rate"] == SPIKE_ERRORS / SPIKE_CALLS
    assert [b["key"] for b in by_id[findings.route_spike]["evidence_chart"]] == [
        "error_rate",
        "baseline_error_rate",
    ]
    revoked_chart = await _evidence_chart(page, findings.revoked["team-a"])
    assert revoked_chart == {"categories": [labels["count"]], "values": [3]}
    watch.assert_clean()


async def test_admin_acknowledges_and_resolves_with_audit_and_csrf(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    findings: Findings,
    watch: BrowserWatch,
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    await goto(page, "/security?min_severity=high")
    target = findings.revoked["team-a"]
    async with page.expect_navigation():
        await page.click(f"section.finding[data-finding-id='{target}'] button.acknowledge")
    assert page.url.endswith("/security?min_severity=high")
    assert target not in await _shown_ids(page)  # the list shows open findings

    acknowledged = await _json(page, f"/api/security/findings/{target}")
    assert acknowledged["status"] == "acknowledged"
    assert acknowledged["status_changed_by"] == users["admin"][0]
    entries = await services.audit.list(
        admin, action="security.finding.acknowledge", target_id=str(target)
    )
    assert [(e.actor, e.target_type) for e in entries] == [(users["admin"][0], "security_finding")]

    await goto(page, "/security?status=acknowledged")
    assert await _shown_ids(page) == [target]
    row = page.locator(f"section.finding[data-finding-id='{target}']")
    assert await row.get_attribute("data-status") == "acknowledged"
    assert await row.locator("button.acknowledge").count() == 0
    async with page.expect_navigation():
        await row.locator("button.resolve").click()
    assert (await _json(page, f"/api/security/findings/{target}"))["status"] == "resolved"
    assert await services.audit.list(
        admin, action="security.finding.resolve", target_id=str(target)
    )

    untouched = findings.revoked["team-b"]
    for path in (
        f"/security/findings/{untouched}/acknowledge",
        f"/security/findings/{untouched}/resolve",
    ):
        missing = await page.request.post(path, form={"back": ""})
        assert missing.status == 403, path
        wrong = await page.request.post(path, form={"csrf_token": "0" * 64})
        assert wrong.status == 403, path
    assert (await _json(page, f"/api/security/findings/{untouched}"))["status"] == "open"

    for bad in ("status=bogus", "kind=nope", "min_severity=severe", "token_id=x", "offset=-1"):
        for path in ("/security", "/security.json"):
            answer = await page.request.get(f"{path}?{bad}")
            assert answer.status == 422, (path, bad)
    watch.assert_clean()


async def test_member_sees_and_acts_on_only_their_teams_findings(
    browser: Any,
    control_plane: str,
    users: dict[str, tuple[str, str]],
    findings: Findings,
    watch: BrowserWatch,
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["member"])
    for language in ("en", "zh-TW"):
        await goto(page, f"/security?lang={language}&status=all")
        await wait_for_charts(page)
        assert await _shown_ids(page) == [findings.revoked["team-a"]]
        assert await page.locator("button.acknowledge, button.resolve").count() == 2
    twin = await _json(page, "/security.json?status=all")
    assert [(f["team_id"], f["id"]) for f in twin["findings"]] == [
        ("team-a", findings.revoked["team-a"])
    ]
    other_team = await _json(page, f"/security.json?token_id={findings.revoked_tokens['team-b']}")
    assert other_team["findings"] == []

    csrf_token = await page.locator("form.logout input[name=csrf_token]").input_value()
    other_teams = await page.request.post(
        f"/security/findings/{findings.revoked['team-b']}/acknowledge",
        form={"csrf_token": csrf_token},
        max_redirects=0,
    )
    assert other_teams.status == 404
    own_team = await page.request.post(
        f"/security/findings/{findings.revoked['team-a']}/acknowledge",
        form={"csrf_token": csrf_token},
        max_redirects=0,
    )
    assert own_team.status == 303
    assert (await _json(page, f"/api/security/findings/{findings.revoked['team-a']}"))[
        "status"
    ] == "acknowledged"
    watch.assert_clean()


async def test_dashboard_nav_token_and_route_pages_link_to_security(
    browser: Any,
    control_plane: str,
    users: dict[str, tuple[str, str]],
    findings: Findings,
    watch: BrowserWatch,
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    await goto(page, "/")
    assert await page.locator("nav.nav a[href='/security']").count() == 1
    assert "4" in await page.locator("#security-findings .badge.count").inner_text()
    async with page.expect_navigation():
        await page.click("#all-findings")
    assert page.url.endswith("/security")
    assert len(await _shown_ids(page)) == 4
    assert await page.locator("nav.nav a[aria-current=page]").get_attribute("href") == "/security"

    token_id = findings.revoked_tokens["team-b"]
    await goto(page, f"/tokens/{token_id}")
    async with page.expect_navigation():
        await page.click("#token-findings")
    assert await _shown_ids(page) == [findings.revoked["team-b"]]

    await goto(page, f"/routes/{findings.route_id}")
    async with page.expect_navigation():
        await page.click("#route-findings")
    assert await _shown_ids(page) == [findings.route_spike]
    await wait_for_charts(page)
    watch.assert_clean()


@pytest.mark.parametrize("language", ["en", "zh-TW"])
async def test_security_page_fits_a_phone_in_the_dark(
    browser: Any,
    control_plane: str,
    users: dict[str, tuple[str, str]],
    findings: Findings,
    watch: BrowserWatch,
    screenshot_dir: Path,
    language: str,
) -> None:
    context = await open_context(browser, control_plane, watch, width=390, color_scheme="dark")
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    await goto(page, f"/security?lang={language}&status=all")
    await wait_for_charts(page)
    assert len(await _shown_ids(page)) == 4
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, overflow
    await page.screenshot(
        path=str(screenshot_dir / f"{language}-dark-390-security-findings.png"), full_page=True
    )
    watch.assert_clean()
