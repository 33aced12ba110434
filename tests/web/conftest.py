"""Fixtures for the dashboard tests: the control plane served over loopback HTTP, users (an
admin and a viewer of team-a), usage written through the recorder's own store function, and
Debian's Chromium driven by Playwright with a watch on console errors, CSP violations and
dialogs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tokenmanager.access.actor import Actor, Role
from tokenmanager.api.app import create_app
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.llm.models import LlmUsage, UsageSource
from tokenmanager.pricing.book import PriceBook
from tokenmanager.pricing.defaults import DEFAULT_PRICES
from tokenmanager.settings import Settings
from tokenmanager.storage.usage import insert_usage_events
from tokenmanager.testing import make_settings, running_asgi_server
from tokenmanager.tokens.codec import hash_token
from tokenmanager.tokens.models import IssuedToken
from tokenmanager.usage.events import UsageEvent

CHROMIUM = os.environ.get("TOKENMANAGER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN = ("alice", "admin password 123")
VIEWER = ("victor", "viewer password 123")
MEMBER = ("mona", "member password 123")
DEADLINE_S = 15.0
DEFAULT_BOOK = PriceBook.of(DEFAULT_PRICES)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # Loopback upstreams (the mock upstream) are allowed.
    return make_settings(tmp_path / "data", database_url, upstream_allow="127.0.0.0/8")


@pytest.fixture
async def control_plane(settings: Settings, services: Services) -> AsyncIterator[str]:
    """The control plane (API and dashboard) over real HTTP; yields its base URL."""
    async with running_asgi_server(create_app(settings, services)) as url:
        yield url


@pytest.fixture
async def users(services: Services, admin: Actor) -> dict[str, tuple[str, str]]:
    """`alice` (admin), `victor` (viewer of team-a) and `mona` (member of team-a); teams team-a
    and team-b."""
    for team_id in ("team-a", "team-b"):
        if await services.teams.read(admin, team_id) is None:
            await services.teams.create(admin, team_id=team_id, name=f"Team {team_id[-1].upper()}")
    await services.users.create(admin, username=ADMIN[0], password=ADMIN[1], role=Role.ADMIN)
    await services.users.create(
        admin, username=VIEWER[0], password=VIEWER[1], role=Role.VIEWER, team_ids=["team-a"]
    )
    await services.users.create(
        admin, username=MEMBER[0], password=MEMBER[1], role=Role.MEMBER, team_ids=["team-a"]
    )
    return {"admin": ADMIN, "viewer": VIEWER, "member": MEMBER}


def usage_event(
    issued: IssuedToken,
    route_path: str,
    *,
    minutes_ago: float,
    status: int = 200,
    duration_ms: int = 120,
    now: datetime | None = None,
    **extra: Any,
) -> UsageEvent:
    moment = (now or utcnow()) - timedelta(minutes=minutes_ago)
    return UsageEvent(
        token_hash=hash_token(issued.token_secret),
        route_path=route_path,
        used_at=moment,
        response_status=status,
        response_time_ms=duration_ms,
        request_method="POST",
        **extra,
    )


async def write_usage(services: Services, events: list[UsageEvent]) -> None:
    """Store events the way the recorder does (raw rows, last_used, rollups)."""
    async with services.database.write() as connection:
        await insert_usage_events(connection, events)


@dataclass
class BrowserWatch:
    """What the page did that a test must notice: console errors, CSP violations, dialogs."""

    console_errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    accept_dialogs: bool = False

    def assert_clean(self) -> None:
        assert self.console_errors == [], self.console_errors
        assert self.violations == [], self.violations
        assert self.dialogs == [], self.dialogs


# Installed before any page script runs: CSP violations are reported to the console, where
# the watch picks them up (the event itself never reaches Playwright).
_REPORT_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', (event) => {
  console.error('CSP violation: ' + event.violatedDirective + ' ' + event.blockedURI);
});
"""


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install test installs Debian's chromium")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
def watch() -> BrowserWatch:
    return BrowserWatch()


async def open_context(
    browser: Any,
    base_url: str,
    watch: BrowserWatch,
    *,
    width: int = 1280,
    color_scheme: str = "light",
) -> Any:
    """A fresh browser context (own cookies) whose pages report into `watch`."""
    context = await browser.new_context(
        base_url=base_url,
        viewport={"width": width, "height": 900},
        color_scheme=color_scheme,
    )
    await context.add_init_script(_REPORT_VIOLATIONS)

    def on_console(message: Any) -> None:
        if message.type == "error":
            text = message.text
            (watch.violations if text.startswith("CSP violation") else watch.console_errors).append(
                text
            )

    async def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        await (dialog.accept() if watch.accept_dialogs else dialog.dismiss())

    def on_page(page: Any) -> None:
        page.on("console", on_console)
        page.on("pageerror", lambda error: watch.console_errors.append(str(error)))
        page.on("dialog", on_dialog)

    context.on("page", on_page)
    return context


async def sign_in(page: Any, username: str, password: str) -> None:
    await page.goto("/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    async with page.expect_navigation():
        await page.click("form[action='/login'] button[type=submit]")


async def goto(page: Any, path: str, status: int = 200) -> Any:
    """Open `path` and check the answer's status; returns the response."""
    answer = await page.goto(path)
    assert answer is not None, path
    assert answer.status == status, path
    return answer


async def wait_for_charts(page: Any) -> None:
    """Charts are drawn once app.js has read the twin (body[data-charts-ready])."""
    if await page.locator("[data-chart]").count():
        await page.wait_for_selector("body[data-charts-ready=true]", timeout=DEADLINE_S * 1000)


async def chart_option(page: Any, name: str) -> dict[str, Any]:
    """The option ECharts holds for the chart `name` (series, axes), read from its instance."""
    option: dict[str, Any] = await page.evaluate(
        """(name) => {
            const element = document.querySelector(`[data-chart="${name}"]`);
            const chart = echarts.getInstanceByDom(element);
            const option = chart.getOption();
            return {series: option.series.map(s => ({name: s.name, type: s.type, data: s.data})),
                    xAxis: option.xAxis, yAxis: option.yAxis};
        }""",
        name,
    )
    return option


SCREENSHOTS = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def screenshot_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Where page screenshots go: TOKENMANAGER_SCREENSHOT_DIR (CI keeps it as an artifact) or a
    pytest temporary directory. `manifest.txt` there lists every file written, and the test
    summary names the directory."""
    chosen = os.environ.get("TOKENMANAGER_SCREENSHOT_DIR")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    request.config.stash[SCREENSHOTS] = directory
    yield directory
    shots = sorted(str(path) for path in directory.glob("*.png"))
    (directory / "manifest.txt").write_text("\n".join(shots) + "\n")


UPSTREAM_CREDENTIAL = "sk-live-upstream-credential-0123456789"  # must never reach a page
NAMES = {
    "token_a": "Prod bot",
    "token_b": "Batch job",
    "team_b": "Team B",
    "route_a": "/api/openai",
    "route_b": "/api/aws",
    "description": "OpenAI chat completions",
    "message": "upstream timed out",
    "model": "gpt-4o-mini",
}
UNPRICED_MODEL = "in-house-llm"


def llm_fields(model: str, index: int) -> dict[str, Any]:
    """An LLM call's metered fields, its cost computed with the shipped default prices as the
    gateway does at record time (None for a model without a price)."""
    usage = LlmUsage(
        model=model,
        prompt_tokens=1000 + 10 * index,
        completion_tokens=200 + index,
        cached_prompt_tokens=None,
        reasoning_tokens=None,
        usage_source=UsageSource.REPORTED,
    )
    return {
        "model": model,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "usage_source": usage.usage_source.value,
        "cost_pusd": DEFAULT_BOOK.cost_for(usage),
    }


@dataclass
class Stage:
    """Two teams' tokens and two routes with a day of usage: team-a's token on route_a (some
    500s; every other success an LLM call to names["model"], one to a model without a price),
    team-b's on route_b (some 429s), and one call by a hash no token has."""

    tokens: dict[str, IssuedToken]
    route_ids: dict[str, int]
    names: dict[str, str]
    events: list[UsageEvent] = field(default_factory=list)


async def build_stage(
    services: Services, admin: Actor, names: dict[str, str] | None = None
) -> Stage:
    names = {**NAMES, **(names or {})}
    await services.teams.update(admin, "team-b", {"name": names["team_b"]})
    token_a = await services.tokens.issue(admin, name=names["token_a"], team_id="team-a")
    token_b = await services.tokens.issue(admin, name=names["token_b"], team_id="team-b")
    route_a = await services.routes.create(
        admin,
        path_prefix=names["route_a"],
        upstream_url="http://127.0.0.1:9/v1",
        upstream_auth_header="Authorization",
        upstream_auth_value=f"Bearer {UPSTREAM_CREDENTIAL}",
        description=names["description"],
    )
    route_b = await services.routes.create(
        admin, path_prefix=names["route_b"], upstream_url="http://127.0.0.1:9/aws"
    )
    now = utcnow()
    events = []
    for index in range(24):
        minutes_ago = 2 + index * 55
        llm: dict[str, Any] = {}
        if index % 2 == 0:
            llm = llm_fields(names["model"], index)
        elif index == 1:
            llm = llm_fields(UNPRICED_MODEL, index)
        events.append(
            usage_event(token_a, names["route_a"], minutes_ago=minutes_ago, now=now,
                        duration_ms=100 + 40 * (index % 5), **llm)
        )  # fmt: skip
        if index % 3 == 0:
            events.append(
                usage_event(token_b, names["route_b"], minutes_ago=minutes_ago + 1, now=now,
                            status=429, duration_ms=30)
            )  # fmt: skip
        if index % 6 == 0:
            events.append(
                usage_event(token_a, names["route_a"], minutes_ago=minutes_ago + 2, now=now,
                            status=500, duration_ms=900, error_message=names["message"])
            )  # fmt: skip
    stranger = UsageEvent(
        token_hash="cd" * 32, route_path=names["route_b"], used_at=now - timedelta(minutes=30),
        response_status=401, response_time_ms=5,
    )  # fmt: skip
    await write_usage(services, [*events, stranger])
    return Stage(
        tokens={"a": token_a, "b": token_b},
        route_ids={"a": route_a.id, "b": route_b.id},
        names=names,
        events=[*events, stranger],
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    directory = config.stash.get(SCREENSHOTS, None)
    if directory is not None:
        terminalreporter.write_line(f"dashboard screenshots: {directory}/manifest.txt")
