"""Alerts over real HTTP to a loopback receiver: signed bodies, severity routing, cool-down,
retries with backoff, the test action, the SSRF guard and secrets at rest."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.errors import InvalidInputError
from tokenmanager.security.models import Severity
from tokenmanager.security.webhooks import SIGNATURE_HEADER, WebhookService, sign, verify_signature
from tokenmanager.ssrf import UpstreamPolicy
from tokenmanager.storage.schema import security_webhooks
from tokenmanager.testing import free_port

from .conftest import Receiver, all_findings, detect_now, refused_call

SECRET = "a shared signing secret of the receiver"


async def _stuffing_finding(services: Services) -> None:
    now = utcnow()
    events = [refused_call(None, now - timedelta(seconds=90 - i)) for i in range(40)]
    await detect_now(services, events, now)


async def test_alert_reaches_receiver_with_a_valid_signature(
    services: Services, admin: Actor, receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver
    created = await services.security.webhooks.create(
        admin, name="soc", url=url, min_severity=Severity.HIGH, secret=SECRET
    )

    await _stuffing_finding(services)
    assert await services.security.webhooks.deliver_due() == 1

    [(headers, body)] = app.requests
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body)
    assert not verify_signature("another secret entirely!", headers[SIGNATURE_HEADER.lower()], body)
    assert not verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body + b" ")
    payload = json.loads(body)
    assert payload["event"] == "finding"
    assert payload["finding"]["kind"] == "auth_failure_burst"
    assert payload["finding"]["ip_address"] == "185.220.101.7"
    assert payload["finding"]["evidence"]["count"] == 40
    [delivery] = await services.security.webhooks.deliveries(admin, created.webhook["id"])
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempt_log"]] == [200]


async def test_findings_below_the_minimum_severity_are_not_sent(
    services: Services, admin: Actor, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    await services.security.webhooks.create(
        admin, name="pager", url=url, min_severity=Severity.CRITICAL
    )
    await _stuffing_finding(services)  # high, not critical
    assert await services.security.webhooks.deliver_due() == 0


async def test_repeated_alert_within_the_cooldown_is_sent_once(
    services: Services, admin: Actor, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    await services.security.webhooks.create(admin, name="soc", url=url, cooldown_s=3600)
    await _stuffing_finding(services)
    [finding] = await all_findings(services)
    await services.security.findings.resolve(admin, finding.id)

    queued_again = await services.security.webhooks.enqueue(finding)

    assert queued_again == 0
    assert await services.security.webhooks.deliver_due() == 1


async def test_failed_delivery_is_retried_with_backoff_until_it_succeeds(
    services: Services, admin: Actor, receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver
    app.statuses = [500, 503]
    created = await services.security.webhooks.create(admin, name="soc", url=url, secret=SECRET)
    await _stuffing_finding(services)  # detection is not held up by the failing receiver
    assert len(await all_findings(services)) == 1

    assert await services.security.webhooks.deliver_due() == 1
    assert await services.security.webhooks.deliver_due() == 0  # not due before its backoff
    assert await services.security.webhooks.deliver_due(utcnow() + timedelta(seconds=31)) == 1
    assert await services.security.webhooks.deliver_due(utcnow() + timedelta(seconds=31)) == 0
    assert await services.security.webhooks.deliver_due(utcnow() + timedelta(minutes=3)) == 1

    [delivery] = await services.security.webhooks.deliveries(admin, created.webhook["id"])
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 503, 200]
    assert [a["error"] for a in delivery["attempt_log"]][:2] == [
        "receiver answered 500",
        "receiver answered 503",
    ]
    bodies = {body for _, body in app.requests}
    assert len(bodies) == 1  # every retry sends the same payload


async def test_send_test_delivers_a_signed_slack_payload(
    services: Services, admin: Actor, receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver
    created = await services.security.webhooks.create(
        admin, name="slack", url=url, payload_format="slack", secret=SECRET
    )

    delivery = await services.security.webhooks.send_test(admin, created.webhook["id"])

    assert delivery["status"] == "delivered"
    [(headers, body)] = app.requests
    assert headers["x-tokenmanager-event"] == "test"
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body)
    assert "test alert" in json.loads(body)["text"]


async def test_unreachable_receiver_is_recorded_as_a_failed_attempt(
    services: Services, admin: Actor
) -> None:
    created = await services.security.webhooks.create(
        admin, name="gone", url=f"http://127.0.0.1:{free_port()}/hook"
    )
    delivery = await services.security.webhooks.send_test(admin, created.webhook["id"])
    assert delivery["status"] == "pending"
    assert delivery["attempt_log"][0]["error"] == "could not connect"
    assert delivery["next_attempt_at"] is not None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://[::1]/x",
     "http://2130706433/x", "ftp://example.org/x", "http://user:pw@example.org/x"],
)  # fmt: skip
async def test_webhook_urls_pass_the_ssrf_guard(services: Services, admin: Actor, url: str) -> None:
    guarded = WebhookService(services.database, services.keyring, UpstreamPolicy())
    with pytest.raises(InvalidInputError):
        await guarded.create(admin, name="internal", url=url)


async def test_webhook_url_and_secret_are_encrypted_at_rest(
    services: Services, admin: Actor, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    created = await services.security.webhooks.create(admin, name="soc", url=url, secret=SECRET)
    async with services.database.read() as connection:
        row = (await connection.execute(sa.select(security_webhooks))).one()
    stored = json.dumps([str(value) for value in row])
    assert SECRET not in stored
    assert "/hooks/security" not in stored
    assert created.webhook["url_display"].endswith("/…")
    assert sign(SECRET, 1, b"{}") != sign("other", 1, b"{}")
