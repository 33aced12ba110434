"""One behaviour, two gateways: every case of the table (cases.py) goes to the Python gateway
and to the edge Worker under `tokenmanager edge dev`; status, error body, WWW-Authenticate, what
the upstream saw and the usage recorded must agree, and match the case's expectation."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.settings import Settings
from tokenmanager.storage.schema import token_usage_logs, tokens
from tokenmanager.tokens import codec

from .cases import CASES, Case
from .conftest import QUERY_CREDENTIAL, TEAM_ID, UPSTREAM_CREDENTIAL, EdgeStage
from .stage import running_edge_dev

USAGE_DEADLINE_S = 60.0


async def _secrets(services: Services, admin: Actor, stage: EdgeStage) -> dict[str, str]:
    revoked = await services.tokens.issue(
        admin, name="revoked", team_id=TEAM_ID, scopes=["echo:read"]
    )
    await services.tokens.revoke(admin, revoked.token.id)
    expired = await services.tokens.issue(
        admin, name="expired", team_id=TEAM_ID, scopes=["echo:read"]
    )
    async with services.database.write() as connection:
        await connection.execute(
            tokens.update()
            .where(tokens.c.id == expired.token.id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    valid = stage.token.token_secret
    typo = valid[:-1] + ("A" if valid[-1] != "A" else "B")
    return {
        "valid": valid,
        "narrow": stage.narrow_token.token_secret,
        "bad_checksum": typo,
        "unknown": codec.build_token_secret(),
        "revoked": revoked.token_secret,
        "expired": expired.token_secret,
    }


async def _send(
    client: httpx.AsyncClient, base: str, case: Case, secrets: dict[str, str]
) -> dict[str, Any]:
    headers = dict(case.headers)
    if case.token is not None:
        if case.via == "bearer":
            headers["Authorization"] = f"Bearer {secrets[case.token]}"
        else:
            headers["X-API-Key"] = secrets[case.token]
    response = await client.request(
        case.method, base + case.path, headers=headers, content=case.body
    )
    outcome: dict[str, Any] = {
        "status": response.status_code,
        "www-authenticate": response.headers.get("www-authenticate"),
    }
    if response.status_code >= 400 and response.status_code != 418:
        outcome["body"] = response.json()
    elif "/api/mock/" in case.path:
        outcome["body"] = response.text
        outcome["content-type"] = response.headers.get("content-type", "").split(";")[0]
    else:
        seen = response.json()
        seen_headers = {k.lower(): v for k, v in seen["headers"].items()}
        outcome["seen"] = {
            "path": seen["path"],
            "query": seen["query"],
            "method": seen["method"],
            "body": seen["body"],
            "authorization": seen_headers.get("authorization"),
            "x-api-key": seen_headers.get("x-api-key"),
            "x-private": seen_headers.get("x-private"),
            "proxy-authorization": seen_headers.get("proxy-authorization"),
            "keep-alive": seen_headers.get("keep-alive"),
            "x-kept": seen_headers.get("x-kept"),
            "token anywhere": any(secrets["valid"] in v for v in seen_headers.values())
            or secrets["valid"] in seen["query"],
        }
    return outcome


def _expected_seen(case: Case) -> dict[str, Any]:
    replacements = {"injected": f"Bearer {UPSTREAM_CREDENTIAL}"}
    expected = {}
    for key, value in case.seen.items():
        if isinstance(value, str):
            value = replacements.get(value, value).replace("QUERY", QUERY_CREDENTIAL)
        expected[key] = value
    return expected


async def test_the_python_gateway_and_the_worker_answer_every_case_alike(
    services: Services,
    admin: Actor,
    settings: Settings,
    stage: EdgeStage,
    control_plane: str,
    python_gateway: str,
) -> None:
    secrets = await _secrets(services, admin, stage)
    mismatches: list[str] = []
    async with (
        running_edge_dev(settings, control_plane) as edge,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for case in CASES:
            python = await _send(client, python_gateway, case, secrets)
            worker = await _send(client, edge, case, secrets)
            for key, value in case.edge_differs.items():
                if worker["seen"][key] != value:
                    mismatches.append(f"{case.name}: the documented difference changed: {worker}")
                worker["seen"][key] = python["seen"][key]
            if python != worker:
                mismatches.append(f"{case.name}:\n  python {python}\n  worker {worker}")
            if worker["status"] != case.expected_status:
                mismatches.append(
                    f"{case.name}: status {worker['status']}, wanted {case.expected_status}"
                )
            if (
                worker["status"] == 401
                and worker["www-authenticate"] != 'Bearer realm="tokenmanager"'
            ):
                mismatches.append(f"{case.name}: no WWW-Authenticate on a 401")
            if "seen" in worker:
                if worker["seen"]["token anywhere"]:
                    mismatches.append(f"{case.name}: the upstream saw the client's token")
                for key, value in _expected_seen(case).items():
                    if python["seen"][key] != value:
                        mismatches.append(
                            f"{case.name}: upstream saw {key}={python['seen'][key]!r}, "
                            f"wanted {value!r}"
                        )
            if case.name.startswith("streamed") and (
                worker.get("body", "").count("data: ") != 5
                or worker.get("content-type") != "text/event-stream"
            ):
                mismatches.append(f"{case.name}: stream not relayed whole: {worker}")
        usage = await _usage_by_source(services, len(CASES))
    assert not mismatches, "\n".join(mismatches)
    assert usage["edge"] == usage["gateway"], f"usage differs:\n{usage}"
    assert sum(usage["edge"].values()) == len(CASES)


async def _usage_by_source(
    services: Services, expected: int
) -> dict[str, Counter[tuple[Any, ...]]]:
    """(status, failure kind, route, token hash known?) per source, once both have `expected`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + USAGE_DEADLINE_S
    while True:
        async with services.database.read() as connection:
            rows = list(await connection.execute(sa.select(token_usage_logs)))
        usage: dict[str, Counter[tuple[Any, ...]]] = {"gateway": Counter(), "edge": Counter()}
        for row in rows:
            usage[row.source][
                (
                    row.response_status,
                    row.failure_kind,
                    row.route_path,
                    bool(row.token_hash),
                    row.request_method,
                )
            ] += 1
        if all(sum(c.values()) >= expected for c in usage.values()) or loop.time() > deadline:
            return usage
        await asyncio.sleep(0.2)
