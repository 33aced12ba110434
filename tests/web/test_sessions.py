"""Signing in and out of the dashboard, in a real browser: the session cookie's attributes,
rotation at login, death at logout, one answer for unknown users and wrong passwords,
throttling, and CSRF on every state change (a POST without the token gets 403)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tokenmanager.api.auth import SESSION_COOKIE

from .conftest import BrowserWatch, open_context, sign_in

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


async def _session_cookie(context: Any) -> dict[str, Any] | None:
    cookies = await context.cookies()
    return next((cookie for cookie in cookies if cookie["name"] == SESSION_COOKIE), None)


async def _me_status(base_url: str, session_secret: str) -> int:
    async with httpx.AsyncClient(base_url=base_url) as client:
        answer = await client.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {session_secret}"}
        )
        return answer.status_code


async def test_pages_redirect_to_login_and_back(
    browser: Any, control_plane: str, users: dict[str, tuple[str, str]], watch: BrowserWatch
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await page.goto("/routes?lang=en")
    assert "/login?next=%2Froutes" in page.url
    await page.fill("input[name=username]", users["admin"][0])
    await page.fill("input[name=password]", users["admin"][1])
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    assert page.url == f"{control_plane}/routes"
    twin = await (await context.new_page()).request.get(f"{control_plane}/routes.json")
    assert twin.status == 200
    watch.assert_clean()
    await context.close()


async def test_login_cookie_is_httponly_lax_rotated_and_dies_at_logout(
    browser: Any, control_plane: str, users: dict[str, tuple[str, str]], watch: BrowserWatch
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    first = await _session_cookie(context)
    assert first is not None
    assert first["httpOnly"] is True
    assert first["sameSite"] == "Lax"
    assert first["secure"] is False  # plain http here; https requests get Secure
    assert await page.evaluate("document.cookie.includes('tm_session')") is False

    # Signing in again from the same browser ends the old session and starts a new one.
    await sign_in(page, *users["admin"])
    second = await _session_cookie(context)
    assert second is not None
    assert second["value"] != first["value"]
    assert await _me_status(control_plane, first["value"]) == 401
    assert await _me_status(control_plane, second["value"]) == 200

    async with page.expect_navigation():
        await page.click("form.logout button[type=submit]")
    assert page.url.endswith("/login")
    assert await _session_cookie(context) is None
    assert await _me_status(control_plane, second["value"]) == 401
    await page.goto("/tokens")
    assert "/login" in page.url
    watch.assert_clean()
    await context.close()


async def test_unknown_user_and_wrong_password_get_the_same_answer(
    browser: Any, control_plane: str, users: dict[str, tuple[str, str]], watch: BrowserWatch
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    answers = []
    for username, password in (("alice", "not her password"), ("nobody", "not her password")):
        await page.goto("/login")
        await page.fill("input[name=username]", username)
        await page.fill("input[name=password]", password)
        async with page.expect_response(lambda r: r.url.endswith("/login")) as response_info:
            await page.click("button[type=submit]")
        response = await response_info.value
        answers.append((response.status, await page.locator("[role=alert]").text_content()))
    assert answers[0] == answers[1] == (401, "Wrong username or password.")
    assert await _session_cookie(context) is None
    await context.close()


async def test_repeated_failures_are_throttled(
    control_plane: str, users: dict[str, tuple[str, str]]
) -> None:
    """The API's login throttle guards the login form too (per account and IP)."""
    async with httpx.AsyncClient(base_url=control_plane) as client:
        statuses = []
        for _ in range(30):
            form_page = await client.get("/login")
            token = form_page.text.split('name="csrf_token" value="')[1].split('"')[0]
            answer = await client.post(
                "/login", data={"csrf_token": token, "username": "alice", "password": "wrong"}
            )
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                break
        assert statuses[0] == 401
        assert statuses[-1] == 429
        assert "Too many failed sign-ins" in answer.text
        # Throttled means throttled: even the right password is refused for now.
        answer = await client.post(
            "/login", data={"csrf_token": token, "username": "alice", "password": users["admin"][1]}
        )
        assert answer.status_code == 429


async def test_state_changes_without_the_csrf_token_get_403(
    browser: Any, control_plane: str, users: dict[str, tuple[str, str]], watch: BrowserWatch
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    form = {"name": "forged", "team_id": "team-a"}
    for path in ("/tokens", "/routes", "/logout"):
        missing = await page.request.post(path, form=form)
        assert missing.status == 403, path
        wrong = await page.request.post(path, form={**form, "csrf_token": "0" * 64})
        assert wrong.status == 403, path
    tokens_twin = await (await page.request.get("/tokens.json")).json()
    assert [t for t in tokens_twin["tokens"] if t["name"] == "forged"] == []

    # The same POST with the page's token goes through.
    csrf_token = await page.locator("form.logout input[name=csrf_token]").input_value()
    accepted = await page.request.post("/tokens", form={**form, "csrf_token": csrf_token})
    assert accepted.status == 200
    tokens_twin = await (await page.request.get("/tokens.json")).json()
    assert [t["name"] for t in tokens_twin["tokens"]] == ["forged"]

    # The login form has its own token: without it, no sign-in.
    anonymous = await browser.new_context(base_url=control_plane)
    refused = await anonymous.request.post(
        "/login", form={"username": users["admin"][0], "password": users["admin"][1]}
    )
    assert refused.status == 403
    await anonymous.close()
    await context.close()


async def test_the_session_cookie_is_secure_behind_https(
    control_plane: str, users: dict[str, tuple[str, str]]
) -> None:
    """Behind a TLS-terminating proxy on loopback (uvicorn trusts its X-Forwarded-Proto), the
    request is https and the cookie gets the Secure flag."""
    https = {"X-Forwarded-Proto": "https"}
    async with httpx.AsyncClient(base_url=control_plane, headers=https) as client:
        form_page = await client.get("/login")
        token = form_page.text.split('name="csrf_token" value="')[1].split('"')[0]
        # A Secure cookie: httpx keeps it for https only, so hand it back by hand.
        client.cookies.set("tm_login", form_page.cookies["tm_login"])
        answer = await client.post(
            "/login",
            data={
                "csrf_token": token,
                "username": users["admin"][0],
                "password": users["admin"][1],
            },
        )
    assert answer.status_code == 303
    cookie = next(
        value for name, value in answer.headers.multi_items()
        if name == "set-cookie" and value.startswith(f"{SESSION_COOKIE}=")
    )  # fmt: skip
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite=lax", "path=/"} <= attributes
