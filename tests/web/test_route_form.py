"""Adding and editing a route in the browser: the upstream credential is write-only (never
shown, kept when the field is left empty, removed only on request); bad input is explained."""

from __future__ import annotations

from typing import Any

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.llm.models import Provider

from .conftest import BrowserWatch, goto, open_context, sign_in

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

CREDENTIAL = "Bearer sk-form-credential-abcdef0123456789"


async def _stored_route(services: Services, admin: Actor, path_prefix: str) -> Any:
    return next(r for r in await services.routes.list(admin) if r.path_prefix == path_prefix)


async def test_add_and_edit_a_route_without_ever_showing_its_credential(
    browser: Any,
    control_plane: str,
    services: Services,
    admin: Actor,
    users: dict[str, tuple[str, str]],
    watch: BrowserWatch,
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["admin"])
    await goto(page, "/routes/new")
    await page.fill("input[name=path_prefix]", "/api/llm")
    await page.fill("input[name=upstream_url]", "http://127.0.0.1:9/v1")
    await page.fill("input[name=required_scopes]", "llm:chat, llm:embed")
    await page.fill("input[name=upstream_auth_header]", "Authorization")
    await page.fill("input[name=upstream_auth_value]", CREDENTIAL)
    assert await page.input_value("select[name=provider]") == ""
    assert await page.is_checked("input[name=include_stream_usage]")
    await page.select_option("select[name=provider]", "openai")
    async with page.expect_navigation():
        await page.click("#route-form button[type=submit]")
    route = await _stored_route(services, admin, "/api/llm")
    assert page.url.endswith(f"/routes/{route.id}")
    assert route.required_scopes == ("llm:chat", "llm:embed")
    assert route.has_upstream_credential
    assert (route.provider, route.include_stream_usage) == (Provider.OPENAI, True)
    assert "OpenAI-compatible" in await page.locator("#route-provider").inner_text()
    assert CREDENTIAL[-12:] not in await page.content()

    # Editing with the credential field empty keeps the credential.
    await goto(page, f"/routes/{route.id}/edit")
    assert await page.input_value("input[name=upstream_auth_value]") == ""
    assert await page.input_value("select[name=provider]") == "openai"
    assert CREDENTIAL[-12:] not in await page.content()
    await page.fill("input[name=upstream_url]", "http://127.0.0.1:9/v2")
    await page.select_option("select[name=provider]", "anthropic")
    await page.uncheck("input[name=include_stream_usage]")
    async with page.expect_navigation():
        await page.click("#route-form button[type=submit]")
    route = await _stored_route(services, admin, "/api/llm")
    assert route.upstream_url == "http://127.0.0.1:9/v2"
    assert route.has_upstream_credential
    assert (route.provider, route.include_stream_usage) == (Provider.ANTHROPIC, False)

    # Back to a plain route: "none" clears the provider; the form shows what is stored.
    await goto(page, f"/routes/{route.id}/edit")
    assert not await page.is_checked("input[name=include_stream_usage]")
    await page.select_option("select[name=provider]", "")
    async with page.expect_navigation():
        await page.click("#route-form button[type=submit]")
    route = await _stored_route(services, admin, "/api/llm")
    assert route.provider is None

    # Bad input: the form comes back with the reason, nothing changes.
    await goto(page, f"/routes/{route.id}/edit")
    await page.fill("input[name=upstream_url]", "ftp://example")
    async with page.expect_response(lambda r: r.request.method == "POST") as response_info:
        await page.click("#route-form button[type=submit]")
    assert (await response_info.value).status == 422
    assert "upstream_url" in await page.locator("[role=alert]").inner_text()
    route = await _stored_route(services, admin, "/api/llm")
    assert route.upstream_url == "http://127.0.0.1:9/v2"

    # Removing it takes the checkbox.
    await goto(page, f"/routes/{route.id}/edit")
    await page.check("input[name=remove_credential]")
    async with page.expect_navigation():
        await page.click("#route-form button[type=submit]")
    route = await _stored_route(services, admin, "/api/llm")
    assert not route.has_upstream_credential
    assert route.upstream_auth_header is None
    watch.console_errors = [e for e in watch.console_errors if "status of 422" not in e]
    watch.assert_clean()
    await context.close()


async def test_a_viewer_cannot_add_routes(
    browser: Any, control_plane: str, users: dict[str, tuple[str, str]], watch: BrowserWatch
) -> None:
    context = await open_context(browser, control_plane, watch)
    page = await context.new_page()
    await sign_in(page, *users["viewer"])
    await goto(page, "/routes")
    assert await page.locator("a[href='/routes/new']").count() == 0
    csrf_token = await page.locator("form.logout input[name=csrf_token]").input_value()
    answer = await page.request.post(
        "/routes",
        form={"csrf_token": csrf_token, "path_prefix": "/x", "upstream_url": "http://127.0.0.1:9"},
    )
    assert answer.status == 403
    assert "admin role" in await answer.text()
    await goto(page, "/routes/new", 403)
    await context.close()
