"""A token secret or upstream credential never appears in an API read, an error, a log record,
a database row or a `repr` once it has been issued or saved."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tokenmanager.access.actor import Actor
from tokenmanager.api.ingest_keys import CreatedIngestKeyOut
from tokenmanager.api.routes import RouteCreate, RouteUpdate
from tokenmanager.api.sessions import LoginAnswer, LoginBody
from tokenmanager.api.tokens import IssuedTokenOut
from tokenmanager.api.users import UserCreate, UserUpdate
from tokenmanager.composition import Services
from tokenmanager.storage import routes as routes_sql
from tokenmanager.tokens.codec import hash_token

from .answers import expect_error
from .conftest import UPSTREAM_HOST

Client = httpx.AsyncClient
Headers = dict[str, str]
CREDENTIAL = "Bearer sk-live-SECRETVALUE1234"


@dataclass
class Saved:
    token_id: int
    route_id: int
    token_secret: str

    @property
    def secrets(self) -> list[str]:
        # The credential's distinctive middle too, in case a view drops its prefix.
        return [self.token_secret, CREDENTIAL, "SECRETVALUE"]


def assert_no_secret(text: str, secrets: list[str], where: str = "") -> None:
    found = [secret for secret in secrets if secret in text]
    assert not found, f"{found} in {where}: {text[:500]}"


def log_everything_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    """The root logger and every logger with a level of its own (SQLAlchemy sets WARNING on
    `sqlalchemy`) at DEBUG, so that SQL statements and their parameters are captured too."""
    caplog.set_level(logging.DEBUG)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            caplog.set_level(logging.DEBUG, logger=name)


@pytest.fixture
async def saved(
    app_client: Client,
    admin_headers: Headers,
    teams: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> Saved:
    """A token issued and a route with a credential created through the API, with every
    logger at DEBUG from here on."""
    log_everything_at_debug(caplog)
    issued = await app_client.post(
        "/api/tokens", json={"name": "ci", "team_id": "team-a"}, headers=admin_headers
    )
    route = await app_client.post(
        "/api/routes",
        json={
            "path_prefix": "/api/llm",
            "upstream_url": f"https://{UPSTREAM_HOST}/v1",
            "upstream_auth_header": "Authorization",
            "upstream_auth_value": CREDENTIAL,
        },
        headers=admin_headers,
    )
    assert (issued.status_code, route.status_code) == (201, 201), issued.text + route.text
    return Saved(issued.json()["id"], route.json()["id"], issued.json()["token"])


async def test_reads_show_only_that_a_credential_is_set_and_its_last4(
    app_client: Client, admin_headers: Headers, saved: Saved
) -> None:
    route = (await app_client.get(f"/api/routes/{saved.route_id}", headers=admin_headers)).json()

    assert route["upstream_auth_value_set"] is True
    assert route["upstream_auth_value_last4"] == "…1234"


@pytest.mark.parametrize(
    "path",
    [
        "/api/tokens",
        "/api/tokens/{token_id}",
        "/api/routes",
        "/api/routes/{route_id}",
        "/api/audit",
        "/api/audit?limit=1000",
        "/openapi.json",
    ],
)
async def test_no_get_answer_shows_a_secret(
    app_client: Client, admin_headers: Headers, saved: Saved, path: str
) -> None:
    answer = await app_client.get(
        path.format(token_id=saved.token_id, route_id=saved.route_id), headers=admin_headers
    )

    assert answer.status_code == 200, answer.text
    assert_no_secret(answer.text, saved.secrets)


async def test_no_error_answer_echoes_a_secret(
    app_client: Client, admin_headers: Headers, saved: Saved
) -> None:
    token_path, route_path = f"/api/tokens/{saved.token_id}", f"/api/routes/{saved.route_id}"
    duplicate_route = {
        "path_prefix": "/api/llm",
        "upstream_url": f"https://{UPSTREAM_HOST}/v1",
        "upstream_auth_header": "Authorization",
        "upstream_auth_value": CREDENTIAL,
    }
    answers = [
        # The token secret offered as an admin session, and in bodies that are refused.
        await app_client.get(
            "/api/tokens", headers={"Authorization": f"Bearer {saved.token_secret}"}
        ),
        await app_client.patch(
            token_path, json={"token": saved.token_secret}, headers=admin_headers
        ),
        await app_client.post("/api/routes", json=duplicate_route, headers=admin_headers),
        await app_client.patch(
            route_path, json={"upstream_auth_value": CREDENTIAL + "\n"}, headers=admin_headers
        ),
        await app_client.patch(
            route_path, json={"upstream_auth_value": CREDENTIAL * 300}, headers=admin_headers
        ),
    ]

    assert [answer.status_code for answer in answers] == [401, 422, 409, 422, 422]
    for answer in answers:
        expect_error(answer, answer.status_code)
        assert_no_secret(answer.text, saved.secrets)


async def test_no_log_record_contains_a_secret(
    app_client: Client, admin_headers: Headers, saved: Saved, caplog: pytest.LogCaptureFixture
) -> None:
    rotated = await app_client.post(f"/api/tokens/{saved.token_id}/rotate", headers=admin_headers)
    await app_client.patch(
        f"/api/routes/{saved.route_id}",
        json={"upstream_auth_value": CREDENTIAL},
        headers=admin_headers,
    )
    await app_client.get("/api/tokens", headers={"Authorization": f"Bearer {saved.token_secret}"})

    records = caplog.get_records("setup") + caplog.get_records("call")

    assert any(record.name.startswith("sqlalchemy.engine") for record in records)
    secrets = [*saved.secrets, rotated.json()["token"]]
    for record in records:
        assert_no_secret(record.getMessage() + (record.exc_text or ""), secrets, record.name)


async def read_all_rows(services: Services) -> dict[str, list[str]]:
    async with services.database.read() as connection:
        names = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        return {
            name: [
                repr(tuple(row))
                for row in await connection.execute(sa.text(f'SELECT * FROM "{name}"'))
            ]
            for name in names
        }


async def test_no_database_row_holds_a_secret_in_clear(
    app_client: Client, admin_headers: Headers, services: Services, saved: Saved
) -> None:
    tables = await read_all_rows(services)

    assert {"tokens", "routes", "audit_log", "users", "sessions"} <= set(tables)
    assert hash_token(saved.token_secret) in str(tables["tokens"])  # the rows were really read
    for name, rows in tables.items():
        for row in rows:
            assert_no_secret(row, saved.secrets, name)


async def test_service_results_do_not_show_secrets_in_repr(
    services: Services, admin: Actor, teams: tuple[str, str]
) -> None:
    issued = await services.tokens.issue(admin, name="ci", team_id="team-a")
    rotated = await services.tokens.rotate(admin, issued.token.id)
    route = await services.routes.create(
        admin,
        path_prefix="/api/llm",
        upstream_url=f"https://{UPSTREAM_HOST}/v1",
        upstream_auth_header="Authorization",
        upstream_auth_value=CREDENTIAL,
    )
    async with services.database.read() as connection:
        row = await routes_sql.read_route(connection, route.id)
    assert row is not None
    credential = services.routes.credential_of(row)
    assert credential is not None
    assert credential.value == CREDENTIAL
    created_key = await services.ingest_keys.create(admin, name="edge")
    results: list[Any] = [issued, rotated, route, credential, created_key]

    secrets = [issued.token_secret, rotated.token_secret, CREDENTIAL, created_key.key_secret]
    for result in results:
        assert_no_secret(repr(result), secrets)


async def test_request_and_answer_models_do_not_show_secrets_in_repr(
    services: Services, admin: Actor, teams: tuple[str, str]
) -> None:
    issued = await services.tokens.issue(admin, name="ci", team_id="team-a")
    created_key = await services.ingest_keys.create(admin, name="edge")
    password = "a password 123456"
    models = [
        RouteCreate(
            path_prefix="/api/llm",
            upstream_url="https://llm.upstream.test",
            upstream_auth_header="Authorization",
            upstream_auth_value=CREDENTIAL,
        ),
        RouteUpdate(upstream_auth_value=CREDENTIAL),
        IssuedTokenOut.of_issued(issued),
        CreatedIngestKeyOut(
            id=1,
            name="edge",
            display_prefix="tik_",
            created_at=issued.token.created_at,
            created_by="alice",
            last_used=None,
            key=created_key.key_secret,
        ),
        LoginBody(username="alice", password=password),
        LoginAnswer(access_token="tms_session-secret", expires_in=60, csrf_token="csrf"),
        UserCreate(username="bob", password=password, role="viewer", team_ids=["team-a"]),
        UserUpdate(password=password),
    ]

    secrets = [CREDENTIAL, issued.token_secret, created_key.key_secret, password, "tms_session"]
    for model in models:
        assert_no_secret(repr(model), secrets)
