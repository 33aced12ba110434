"""`/api/security`: findings produced by the detectors, filtered, scoped to the viewer's teams,
acknowledged and resolved (audited); malformed filters are 422; webhooks are admin-only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from api.answers import audit_entries, expect_error
from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.security.evaluation import SyntheticToken
from tokenmanager.tokens import codec

from .conftest import detect_now, refused_call


@pytest.fixture
async def two_team_tokens(
    services: Services, admin: Actor, viewer_headers: dict[str, str]
) -> dict[str, SyntheticToken]:
    """A revoked-token finding in team-a and one in team-b, plus a stuffing finding (no team),
    all produced by the detectors from recorded refusals."""
    tokens = {}
    now = utcnow()
    calls = [refused_call(None, now - timedelta(seconds=60 - i)) for i in range(30)]
    for team_id in ("team-a", "team-b"):
        issued = await services.tokens.issue(admin, name=f"{team_id} bot", team_id=team_id)
        await services.tokens.revoke(admin, issued.token.id)
        token = SyntheticToken(issued.token.id, codec.hash_token(issued.token_secret))
        tokens[team_id] = token
        calls += [
            refused_call(token, now - timedelta(minutes=5, seconds=i), failure_kind="revoked",
                         ip_address="198.51.100.4")
            for i in range(3)
        ]  # fmt: skip
    await detect_now(services, sorted(calls, key=lambda call: call.used_at), now)
    return tokens


@pytest.fixture
def two_team_findings(two_team_tokens: dict[str, SyntheticToken]) -> dict[str, int]:
    return {team_id: token.token_id for team_id, token in two_team_tokens.items()}


async def _findings(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> dict[str, Any]:
    answer = await client.get("/api/security/findings", headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_admin_lists_and_filters_findings(
    app_client: httpx.AsyncClient, admin_headers: dict[str, str], two_team_findings: dict[str, int]
) -> None:
    everything = await _findings(app_client, admin_headers)
    assert everything["total"] == 3
    assert {f["kind"] for f in everything["findings"]} == {
        "revoked_token_use",
        "auth_failure_burst",
    }
    revoked = await _findings(app_client, admin_headers, kind="revoked_token_use")
    assert {f["token_id"] for f in revoked["findings"]} == set(two_team_findings.values())
    assert all(f["evidence"]["count"] == 3 for f in revoked["findings"])
    high = await _findings(app_client, admin_headers, min_severity="high")
    assert high["total"] == 3
    one_token = await _findings(app_client, admin_headers, token_id=two_team_findings["team-a"])
    assert [f["team_id"] for f in one_token["findings"]] == ["team-a"]
    page = await _findings(app_client, admin_headers, limit=1, offset=1)
    assert len(page["findings"]) == 1
    assert page["total"] == 3


async def test_viewer_sees_only_their_teams_findings(
    app_client: httpx.AsyncClient,
    viewer_headers: dict[str, str],
    two_team_findings: dict[str, int],
) -> None:
    visible = await _findings(app_client, viewer_headers)
    assert [(f["team_id"], f["token_id"]) for f in visible["findings"]] == [
        ("team-a", two_team_findings["team-a"])
    ]
    other = await _findings(app_client, viewer_headers, token_id=two_team_findings["team-b"])
    assert other["findings"] == []


async def test_a_viewer_reads_but_cannot_acknowledge_or_resolve_their_teams_findings(
    app_client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    viewer_headers: dict[str, str],
    two_team_findings: dict[str, int],
) -> None:
    findings = (await _findings(app_client, admin_headers, kind="revoked_token_use"))["findings"]
    own = next(f["id"] for f in findings if f["team_id"] == "team-a")
    path = f"/api/security/findings/{own}"
    assert (await app_client.get(path, headers=viewer_headers)).status_code == 200
    for action in ("acknowledge", "resolve"):
        expect_error(await app_client.post(f"{path}/{action}", headers=viewer_headers), 403)
    assert (await app_client.get(path, headers=admin_headers)).json()["status"] == "open"


async def test_acknowledge_and_resolve_are_audited_and_scoped(
    app_client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    member_headers: dict[str, str],
    two_team_findings: dict[str, int],
) -> None:
    findings = (await _findings(app_client, admin_headers, kind="revoked_token_use"))["findings"]
    by_team = {f["team_id"]: f["id"] for f in findings}

    hidden = await app_client.post(
        f"/api/security/findings/{by_team['team-b']}/acknowledge", headers=member_headers
    )
    expect_error(hidden, 404)
    acknowledged = await app_client.post(
        f"/api/security/findings/{by_team['team-a']}/acknowledge", headers=member_headers
    )
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["status"] == "acknowledged"
    assert acknowledged.json()["status_changed_by"] == "mona"
    resolved = await app_client.post(
        f"/api/security/findings/{by_team['team-a']}/resolve", headers=admin_headers
    )
    assert resolved.json()["status"] == "resolved"
    reopen = await app_client.post(
        f"/api/security/findings/{by_team['team-a']}/acknowledge", headers=admin_headers
    )
    expect_error(reopen, 409)
    resolved_only = await _findings(app_client, admin_headers, status="resolved")
    assert [f["id"] for f in resolved_only["findings"]] == [by_team["team-a"]]

    entries = await audit_entries(app_client, admin_headers, target_type="security_finding")
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("security.finding.resolve", "alice"),
        ("security.finding.acknowledge", "mona"),
    ]


async def test_repeated_condition_updates_the_open_finding(
    services: Services, app_client: httpx.AsyncClient, admin_headers: dict[str, str],
    two_team_tokens: dict[str, SyntheticToken],
) -> None:  # fmt: skip
    token_id = two_team_tokens["team-a"].token_id
    before = await _findings(app_client, admin_headers, token_id=token_id)
    later = utcnow() + timedelta(seconds=10)  # after where the last run stopped
    again = refused_call(two_team_tokens["team-a"], later, failure_kind="revoked")
    await detect_now(services, [again], later + timedelta(minutes=1))

    after = await _findings(app_client, admin_headers, token_id=token_id)
    assert after["total"] == before["total"] == 1
    [finding] = after["findings"]
    assert finding["occurrences"] == 2
    assert finding["id"] == before["findings"][0]["id"]
    assert finding["last_seen"] > before["findings"][0]["last_seen"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "closed"}, "status"), ({"kind": "nope"}, "kind"),
     ({"min_severity": "urgent"}, "min_severity"), ({"token_id": "abc"}, "token_id"),
     ({"since": "yesterday"}, "since"), ({"limit": "0"}, "limit"), ({"offset": "-1"}, "offset"),
     ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "since")],
)  # fmt: skip
async def test_malformed_filters_are_422(
    app_client: httpx.AsyncClient, admin_headers: dict[str, str], params: dict[str, str], field: str
) -> None:
    answer = await app_client.get("/api/security/findings", headers=admin_headers, params=params)
    error = expect_error(answer, 422)
    assert field in answer.text, error


async def test_webhooks_and_runs_are_admin_only(
    app_client: httpx.AsyncClient, viewer_headers: dict[str, str]
) -> None:
    for method, path in (("GET", "/api/security/webhooks"), ("POST", "/api/security/run"),
                         ("POST", "/api/security/webhooks/1/test")):  # fmt: skip
        answer = await app_client.request(method, path, headers=viewer_headers)
        expect_error(answer, 403)
    anonymous = await app_client.get("/api/security/findings")
    assert anonymous.status_code == 401


async def test_webhook_api_creates_lists_and_never_shows_the_secret_again(
    app_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await app_client.post(
        "/api/security/webhooks", headers=admin_headers,
        json={"name": "soc", "url": "http://127.0.0.1:9/hook/s3cr3t-path",
              "min_severity": "medium"},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert len(secret) >= 32
    listed = await app_client.get("/api/security/webhooks", headers=admin_headers)
    assert secret not in listed.text
    assert "s3cr3t-path" not in listed.text
    assert listed.json()[0]["min_severity"] == "medium"
    refused = await app_client.post(
        "/api/security/webhooks", headers=admin_headers,
        json={"name": "x", "url": "http://169.254.169.254/", "extra": 1},
    )  # fmt: skip
    expect_error(refused, 422)
    internal = await app_client.post(
        "/api/security/webhooks", headers=admin_headers,
        json={"name": "x", "url": "http://169.254.169.254/latest"},
    )  # fmt: skip
    expect_error(internal, 422, "url")
