"""Automatic response: a critical finding of an opted-in detector suspends its token (audited,
announced to gateways, reported in the alert); an admin reinstates it."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.security.evaluation import SyntheticToken

from .conftest import Receiver, all_findings, detect_now, refused_call

AUTO_SUSPEND = {"security_auto_suspend": "auth_failure_burst"}


async def _hammer(services: Services, token: SyntheticToken, calls: int) -> None:
    """`calls` refusals for one token within two minutes: 403s (it lacks the route's scope)."""
    now = utcnow()
    events = [
        refused_call(token, now - timedelta(seconds=130 - i * 0.5), status=403,
                     failure_kind="insufficient_scope")
        for i in range(calls)
    ]  # fmt: skip
    await detect_now(services, events, now)


@pytest.mark.parametrize("settings_overrides", [AUTO_SUSPEND])
async def test_critical_finding_suspends_the_token_and_the_alert_says_so(
    services: Services,
    admin: Actor,
    synthetic_tokens: list[SyntheticToken],
    receiver: tuple[Receiver, str],
) -> None:
    app, url = receiver
    await services.security.webhooks.create(admin, name="soc", url=url)
    token = synthetic_tokens[0]

    await _hammer(services, token, 220)

    suspended = await services.tokens.read(admin, token.token_id)
    assert suspended is not None
    assert suspended.expires_at is not None
    assert suspended.expires_at <= utcnow()
    [token_finding] = [f for f in await all_findings(services) if f.token_id == token.token_id]
    assert token_finding.severity == "critical"
    assert token_finding.response is not None
    assert token_finding.response["action"] == "suspend"
    entries = await services.audit.list(admin, action="security.token.suspend")
    assert [e.target_id for e in entries] == [str(token.token_id)]

    await services.security.webhooks.deliver_due()
    findings_sent = [json.loads(body)["finding"] for _, body in app.requests]
    [sent] = [f for f in findings_sent if f["token_id"] == token.token_id]
    assert sent["response"]["action"] == "suspend"
    assert sent["team_id"] == "team-sec"

    reinstated = await services.security.findings.reinstate(admin, token_finding.id)
    assert reinstated.response is not None
    assert reinstated.response["reinstated_by"] == admin.name
    token_after = await services.tokens.read(admin, token.token_id)
    assert token_after is not None
    assert token_after.expires_at is None
    assert await services.audit.list(admin, action="security.token.reinstate")


@pytest.mark.parametrize("settings_overrides", [AUTO_SUSPEND])
async def test_high_finding_does_not_suspend(
    services: Services, admin: Actor, synthetic_tokens: list[SyntheticToken]
) -> None:
    token = synthetic_tokens[0]
    await _hammer(services, token, 30)
    [finding] = [f for f in await all_findings(services) if f.token_id == token.token_id]
    assert finding.severity == "high"
    assert finding.response is None
    still = await services.tokens.read(admin, token.token_id)
    assert still is not None
    assert still.expires_at is None


async def test_without_opt_in_a_critical_finding_suspends_nothing(
    services: Services, admin: Actor, synthetic_tokens: list[SyntheticToken]
) -> None:
    token = synthetic_tokens[0]
    await _hammer(services, token, 220)
    [finding] = [f for f in await all_findings(services) if f.token_id == token.token_id]
    assert finding.severity == "critical"
    assert finding.response is None
    still = await services.tokens.read(admin, token.token_id)
    assert still is not None
    assert still.expires_at is None


@pytest.mark.parametrize("settings_overrides", [AUTO_SUSPEND])
async def test_reinstate_is_admin_only_over_the_api(
    services: Services,
    synthetic_tokens: list[SyntheticToken],
    app_client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    viewer_headers: dict[str, str],
) -> None:
    await _hammer(services, synthetic_tokens[0], 220)
    [finding] = [f for f in await all_findings(services) if f.token_id is not None]

    refused = await app_client.post(
        f"/api/security/findings/{finding.id}/reinstate", headers=viewer_headers
    )
    assert refused.status_code in (403, 404)
    answer = await app_client.post(
        f"/api/security/findings/{finding.id}/reinstate", headers=admin_headers
    )
    assert answer.status_code == 200, answer.text
    again = await app_client.post(
        f"/api/security/findings/{finding.id}/reinstate", headers=admin_headers
    )
    assert again.status_code == 409
