"""Sign-in, sessions, the session cookie with its CSRF token, and login throttling."""

from __future__ import annotations

import httpx
import pytest

from conftest import ADMIN_PASSWORD
from tokenmanager.access.actor import Actor, Role
from tokenmanager.api.auth import CSRF_HEADER, SESSION_COOKIE
from tokenmanager.composition import Services
from tokenmanager.users.throttle import FAILURES_PER_ACCOUNT

from .answers import expect_error


@pytest.fixture
async def alice(services: Services, admin: Actor) -> str:
    await services.users.create(admin, username="alice", password=ADMIN_PASSWORD, role=Role.ADMIN)
    return "alice"


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/login", json={"username": username, "password": password})


async def test_login_returns_bearer_token_csrf_token_and_httponly_lax_cookie(
    app_client: httpx.AsyncClient, alice: str
) -> None:
    answer = await login(app_client, alice, ADMIN_PASSWORD)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["access_token"]
    assert body["csrf_token"]
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={body['access_token']};")
    assert "httponly" in cookie.lower()
    assert "samesite=lax" in cookie.lower()


async def test_login_bearer_token_signs_in(app_client: httpx.AsyncClient, alice: str) -> None:
    access_token = (await login(app_client, alice, ADMIN_PASSWORD)).json()["access_token"]
    app_client.cookies.clear()

    answer = await app_client.get(
        "/api/auth/me", headers={"Authorization": f"Bearer {access_token}"}
    )

    assert answer.status_code == 200
    me = answer.json()
    assert (me["username"], me["role"], me["team_ids"]) == ("alice", "admin", [])


async def test_wrong_password_and_unknown_user_get_the_identical_401(
    app_client: httpx.AsyncClient, alice: str
) -> None:
    wrong_password = await login(app_client, alice, "not the password at all")
    unknown_user = await login(app_client, "mallory", "not the password at all")

    expect_error(wrong_password, 401)
    assert unknown_user.status_code == 401
    assert unknown_user.json() == wrong_password.json()
    assert "set-cookie" not in wrong_password.headers


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Bearer tms_made-up-session-secret"},
        {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
    ],
    ids=["none", "garbage-bearer", "made-up-session", "basic"],
)
async def test_request_without_valid_credentials_gets_401(
    app_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    answer = await app_client.get("/api/tokens", headers=headers)

    expect_error(answer, 401)
    assert answer.headers["www-authenticate"] == "Bearer"


async def test_logout_ends_the_session(
    app_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    answer = await app_client.post("/api/auth/logout", headers=admin_headers)

    assert answer.status_code == 204
    expect_error(await app_client.get("/api/auth/me", headers=admin_headers), 401)


async def test_cookie_get_works_without_csrf_token(
    app_client: httpx.AsyncClient, alice: str
) -> None:
    assert (await login(app_client, alice, ADMIN_PASSWORD)).status_code == 200

    answer = await app_client.get("/api/auth/me")

    assert answer.status_code == 200
    assert answer.json()["username"] == "alice"


@pytest.mark.parametrize("csrf_headers", [{}, {CSRF_HEADER: "forged"}], ids=["missing", "wrong"])
async def test_cookie_post_without_valid_csrf_token_gets_403(
    app_client: httpx.AsyncClient, alice: str, csrf_headers: dict[str, str]
) -> None:
    assert (await login(app_client, alice, ADMIN_PASSWORD)).status_code == 200

    answer = await app_client.post(
        "/api/teams", json={"id": "team-c", "name": "C"}, headers=csrf_headers
    )

    expect_error(answer, 403)
    assert (await app_client.get("/api/teams/team-c")).status_code == 404


async def test_cookie_post_with_csrf_token_from_login_succeeds(
    app_client: httpx.AsyncClient, alice: str
) -> None:
    csrf_token = (await login(app_client, alice, ADMIN_PASSWORD)).json()["csrf_token"]

    answer = await app_client.post(
        "/api/teams", json={"id": "team-c", "name": "C"}, headers={CSRF_HEADER: csrf_token}
    )

    assert answer.status_code == 201, answer.text


async def test_csrf_token_of_one_session_does_not_work_for_another(
    app_client: httpx.AsyncClient, alice: str
) -> None:
    first_csrf_token = (await login(app_client, alice, ADMIN_PASSWORD)).json()["csrf_token"]
    app_client.cookies.clear()
    assert (await login(app_client, alice, ADMIN_PASSWORD)).status_code == 200

    answer = await app_client.post(
        "/api/teams", json={"id": "team-c", "name": "C"}, headers={CSRF_HEADER: first_csrf_token}
    )

    expect_error(answer, 403)


async def test_bearer_post_needs_no_csrf_token(
    app_client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    answer = await app_client.post(
        "/api/teams", json={"id": "team-c", "name": "C"}, headers=admin_headers
    )

    assert answer.status_code == 201, answer.text


async def test_login_is_throttled_with_retry_after_after_repeated_failures(
    app_client: httpx.AsyncClient, alice: str
) -> None:
    for _ in range(FAILURES_PER_ACCOUNT):
        expect_error(await login(app_client, alice, "not the password at all"), 401)

    answer = await login(app_client, alice, ADMIN_PASSWORD)

    expect_error(answer, 429)
    assert int(answer.headers["retry-after"]) > 0
    assert "set-cookie" not in answer.headers


async def test_login_with_unknown_field_gets_422(app_client: httpx.AsyncClient, alice: str) -> None:
    answer = await app_client.post(
        "/api/auth/login",
        json={"username": alice, "password": ADMIN_PASSWORD, "role": "admin"},
    )

    expect_error(answer, 422, "role")
