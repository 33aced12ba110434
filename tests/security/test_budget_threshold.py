"""The budget_threshold detector: the pure rule (80 % medium, 100 % high, integer arithmetic,
nothing on no spend) and the monitor on both databases — one finding per subject, period and
threshold, never reopened in the same period once resolved, a new one in the next period, and
an alert to a real webhook receiver."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from time_machine import TimeMachineFixture

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.security.detectors import BudgetedSubject, detect_budget_thresholds
from tokenmanager.security.models import DetectorKind, Severity, Thresholds
from tokenmanager.storage import spend as spend_sql
from tokenmanager.web.security import evidence_chart

from .conftest import Receiver, all_findings

NOW = datetime(2030, 3, 15, 12, 30, tzinfo=UTC)
DAY = (datetime(2030, 3, 15, tzinfo=UTC), datetime(2030, 3, 16, tzinfo=UTC))
MONTH = (datetime(2030, 3, 1, tzinfo=UTC), datetime(2030, 4, 1, tzinfo=UTC))
BOUNDS = {"day": DAY, "month": MONTH}
PUSD_PER_USD = 10**12


def subject(budget_micro_usd: int = 10_000_000, period: str = "month") -> BudgetedSubject:
    return BudgetedSubject(
        scope="token",
        subject="7",
        name="nightly batch",
        team_id="team-a",
        token_id=7,
        budget_micro_usd=budget_micro_usd,
        period=period,
    )


def detect(cost_pusd: int, budget_micro_usd: int = 10_000_000, period: str = "month") -> list:
    return detect_budget_thresholds(
        [subject(budget_micro_usd, period)],
        {("token", "7", period): (cost_pusd, 42)} if cost_pusd is not None else {},
        BOUNDS,
        NOW,
        Thresholds(),
    )


@pytest.mark.parametrize(
    ("cost_pusd", "expected"),
    [
        (0, None),
        (8 * PUSD_PER_USD - 1, None),  # 79.99999...%: integer arithmetic, no rounding up
        (8 * PUSD_PER_USD, (80, Severity.MEDIUM)),
        (10 * PUSD_PER_USD - 1, (80, Severity.MEDIUM)),
        (10 * PUSD_PER_USD, (100, Severity.HIGH)),
        (35 * PUSD_PER_USD, (100, Severity.HIGH)),
    ],
)
def test_thresholds_are_80_and_100_percent_of_the_budget(
    cost_pusd: int, expected: tuple[int, Severity] | None
) -> None:
    observations = detect(cost_pusd)

    if expected is None:
        assert observations == []
        return
    [observation] = observations
    percent, severity = expected
    assert observation.kind is DetectorKind.BUDGET_THRESHOLD
    assert (observation.severity, observation.evidence["threshold_percent"]) == (severity, percent)
    assert observation.fingerprint == f"budget_threshold:token:7:month:2030-03-01:{percent}"
    assert (observation.token_id, observation.team_id) == (7, "team-a")
    assert observation.evidence["budget_usd"] == "10"
    assert observation.evidence["period_start"] == "2030-03-01T00:00:00+00:00"
    assert observation.evidence["period_end"] == "2030-04-01T00:00:00+00:00"
    assert observation.evidence["calls"] == 42


def test_evidence_carries_exact_money() -> None:
    [observation] = detect(12_345_678_901_234, budget_micro_usd=12_345_679)

    assert observation.evidence["spend_usd"] == "12.345678901234"
    assert observation.evidence["budget_usd"] == "12.345679"
    assert observation.evidence["spent_percent"] == 99  # floor: 99.99999...%
    assert observation.severity is Severity.MEDIUM


def test_a_day_budget_is_fingerprinted_by_its_day() -> None:
    [observation] = detect(10 * PUSD_PER_USD, period="day")

    assert observation.fingerprint == "budget_threshold:token:7:day:2030-03-15:100"


def test_no_spend_reports_nothing_even_on_a_zero_budget() -> None:
    assert detect(0, budget_micro_usd=0) == []
    [observation] = detect(1, budget_micro_usd=0)
    assert observation.severity is Severity.HIGH


# -- the monitor on a real store -----------------------------------------------------------


@pytest.fixture
async def spend_table(services: Services) -> None:
    """usage_spend as migration 0007 creates it (owned by the usage side; made here until the
    two are merged)."""
    async with services.database.engine.begin() as connection:
        await connection.run_sync(spend_sql.usage_spend.metadata.create_all)


async def record_spend(
    services: Services, scope: str, subject: str, period: str, start: datetime, cost_usd: int
) -> None:
    async with services.database.write() as connection:
        await connection.execute(
            spend_sql.usage_spend.delete().where(
                spend_sql.usage_spend.c.scope == scope,
                spend_sql.usage_spend.c.subject == subject,
                spend_sql.usage_spend.c.period == period,
                spend_sql.usage_spend.c.period_start == start,
            )
        )
        await connection.execute(
            spend_sql.usage_spend.insert().values(
                scope=scope,
                subject=subject,
                period=period,
                period_start=start,
                cost_pusd=cost_usd * PUSD_PER_USD,
                calls=3,
            )
        )


@pytest.fixture
def frozen(time_machine: TimeMachineFixture) -> TimeMachineFixture:
    time_machine.move_to(NOW, tick=False)
    return time_machine


async def test_monitor_opens_one_finding_per_subject_period_and_threshold(
    services: Services, admin: Actor, spend_table: None, frozen: TimeMachineFixture
) -> None:
    await services.teams.create(admin, team_id="team-a", name="A", budget_usd="100")
    issued = await services.tokens.issue(
        admin, name="batch", team_id="team-a", budget_usd="10", budget_period="day"
    )
    unbudgeted = await services.tokens.issue(admin, name="free", team_id="team-a")
    token_id = str(issued.token.id)
    await record_spend(services, "token", token_id, "day", DAY[0], 8)
    await record_spend(services, "team", "team-a", "month", MONTH[0], 100)
    await record_spend(services, "token", str(unbudgeted.token.id), "day", DAY[0], 1000)
    await record_spend(services, "token", token_id, "month", MONTH[0], 1000)  # not its period
    monitor = services.security.monitor
    alerted: list[int] = []

    async def on_finding(finding: object) -> None:
        alerted.append(finding.id)  # type: ignore[attr-defined]

    monitor.on_finding.append(on_finding)

    await monitor.run_once(NOW)
    findings = await all_findings(services)

    by_scope = {f.evidence["scope"]: f for f in findings}
    assert set(by_scope) == {"token", "team"}
    token_finding, team_finding = by_scope["token"], by_scope["team"]
    assert (token_finding.kind, token_finding.severity) == ("budget_threshold", "medium")
    assert (token_finding.token_id, token_finding.team_id) == (issued.token.id, "team-a")
    assert token_finding.evidence["spend_usd"] == "8"
    assert (team_finding.severity, team_finding.token_id, team_finding.team_id) == (
        "high",
        None,
        "team-a",
    )
    assert sorted(alerted) == sorted(f.id for f in findings)

    # Later runs in the same period add nothing, even once a finding is resolved.
    frozen.shift(timedelta(minutes=5))
    await services.security.findings.resolve(admin, token_finding.id)
    await monitor.run_once(NOW + timedelta(minutes=5))
    assert {(f.id, f.occurrences) for f in await all_findings(services)} == {
        (token_finding.id, 1),
        (team_finding.id, 1),
    }

    # Crossing 100 % opens a second, high finding for the token.
    await record_spend(services, "token", token_id, "day", DAY[0], 10)
    await monitor.run_once(NOW + timedelta(minutes=5))
    token_findings = [f for f in await all_findings(services) if f.evidence["scope"] == "token"]
    assert sorted((f.severity, f.evidence["threshold_percent"]) for f in token_findings) == [
        ("high", 100),
        ("medium", 80),
    ]

    # The next day is a new period: spend there reaching 80 % opens a new finding.
    next_day = DAY[1] + timedelta(hours=1)
    frozen.move_to(next_day, tick=False)
    await record_spend(services, "token", token_id, "day", DAY[1], 9)
    await monitor.run_once(next_day)
    fingerprints = {f.fingerprint for f in await all_findings(services)}
    assert f"budget_threshold:token:{token_id}:day:2030-03-16:80" in fingerprints
    assert len(fingerprints) == 4


async def test_revoked_tokens_and_removed_budgets_raise_nothing(
    services: Services, admin: Actor, spend_table: None, frozen: TimeMachineFixture
) -> None:
    await services.teams.create(admin, team_id="team-a", name="A", budget_usd="1")
    issued = await services.tokens.issue(admin, name="x", team_id="team-a", budget_usd="1")
    await services.tokens.revoke(admin, issued.token.id)
    await services.teams.update(admin, "team-a", {"budget_usd": None})
    await record_spend(services, "token", str(issued.token.id), "month", MONTH[0], 5)
    await record_spend(services, "team", "team-a", "month", MONTH[0], 5)

    await services.security.monitor.run_once(NOW)

    assert await all_findings(services) == []


async def test_a_budget_finding_reaches_the_webhook(
    services: Services,
    admin: Actor,
    spend_table: None,
    receiver: tuple[Receiver, str],
) -> None:
    app, url = receiver
    await services.security.webhooks.create(
        admin, name="finance", url=url, min_severity=Severity.MEDIUM
    )
    await services.teams.create(admin, team_id="team-a", name="A", budget_usd="50")
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    await record_spend(services, "team", "team-a", "month", month_start, 45)

    await services.security.monitor.run_once(now)
    assert await services.security.webhooks.deliver_due() == 1

    [(_, body)] = app.requests
    finding = json.loads(body)["finding"]
    assert (finding["kind"], finding["severity"], finding["team_id"]) == (
        "budget_threshold",
        "medium",
        "team-a",
    )
    assert (finding["evidence"]["spend_usd"], finding["evidence"]["budget_usd"]) == ("45", "50")


def test_the_security_page_charts_spend_against_the_threshold() -> None:
    [observation] = detect(9 * PUSD_PER_USD)

    assert evidence_chart(observation.evidence) == [
        {"key": "spent_percent", "value": 90},
        {"key": "threshold_percent", "value": 80},
    ]
