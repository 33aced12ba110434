"""`/api/prices`: admins set and remove prices per model, anyone signed in reads them; money is
an exact decimal string; bad amounts and names get 422 and change nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tokenmanager.composition import Services
from tokenmanager.pricing.defaults import DEFAULT_PRICES
from tokenmanager.storage.schema import change_feed

from .answers import audit_entries, expect_error, get_json

Client = httpx.AsyncClient
Headers = dict[str, str]
PRICE = {"input_usd_per_mtok": "2.5", "output_usd_per_mtok": 10}


async def prices_by_model(client: Client, headers: Headers) -> dict[str, dict[str, Any]]:
    return {p["model"]: p for p in await get_json(client, headers, "/api/prices")}


async def test_list_shows_the_shipped_defaults_with_their_source(
    app_client: Client, admin_headers: Headers
) -> None:
    listed = await prices_by_model(app_client, admin_headers)

    assert set(listed) == {price.model for price in DEFAULT_PRICES}
    gpt_4o = listed["gpt-4o"]
    assert (gpt_4o["input_usd_per_mtok"], gpt_4o["output_usd_per_mtok"]) == ("2.5", "10")
    assert gpt_4o["cached_input_usd_per_mtok"] == "1.25"
    assert gpt_4o["source"].startswith("default")
    assert gpt_4o["effective_from"] is None


async def test_admin_sets_a_price_that_overrides_the_default_exactly(
    app_client: Client, admin_headers: Headers
) -> None:
    answer = await app_client.put(
        "/api/prices/gpt-4o",
        json={
            "input_usd_per_mtok": 0.15,
            "output_usd_per_mtok": "0.000001",
            "cached_input_usd_per_mtok": "1000000",
        },
        headers=admin_headers,
    )

    assert answer.status_code == 200, answer.text
    price = answer.json()
    assert {k: price[k] for k in ("model", "source")} == {"model": "gpt-4o", "source": "admin"}
    assert (
        price["input_usd_per_mtok"],
        price["output_usd_per_mtok"],
        price["cached_input_usd_per_mtok"],
    ) == ("0.15", "0.000001", "1000000")
    assert price["effective_from"] is not None
    assert (await prices_by_model(app_client, admin_headers))["gpt-4o"] == price


@pytest.mark.parametrize("model", ["openai/gpt-4o", "llama3:8b", "meta-llama/Llama-3.1-8B:free"])
async def test_model_names_may_contain_slashes_and_colons(
    app_client: Client, admin_headers: Headers, model: str
) -> None:
    answer = await app_client.put(f"/api/prices/{model}", json=PRICE, headers=admin_headers)

    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == model
    assert answer.json()["cached_input_usd_per_mtok"] is None
    assert model in await prices_by_model(app_client, admin_headers)

    removed = await app_client.delete(f"/api/prices/{model}", headers=admin_headers)
    assert removed.status_code == 204
    assert model not in await prices_by_model(app_client, admin_headers)


async def test_a_second_change_replaces_the_first(
    app_client: Client, admin_headers: Headers
) -> None:
    for output in ("10", "12.5"):
        answer = await app_client.put(
            "/api/prices/my-model",
            json=PRICE | {"output_usd_per_mtok": output},
            headers=admin_headers,
        )
        assert answer.status_code == 200, answer.text

    assert (await prices_by_model(app_client, admin_headers))["my-model"][
        "output_usd_per_mtok"
    ] == "12.5"


async def test_delete_removes_a_default_and_then_answers_404(
    app_client: Client, admin_headers: Headers
) -> None:
    answer = await app_client.delete("/api/prices/gpt-4o-mini", headers=admin_headers)

    assert answer.status_code == 204
    assert "gpt-4o-mini" not in await prices_by_model(app_client, admin_headers)
    expect_error(await app_client.delete("/api/prices/gpt-4o-mini", headers=admin_headers), 404)

    # Setting it again brings it back, as an admin price.
    again = await app_client.put("/api/prices/gpt-4o-mini", json=PRICE, headers=admin_headers)
    assert again.status_code == 200, again.text
    assert (await prices_by_model(app_client, admin_headers))["gpt-4o-mini"]["source"] == "admin"


async def test_delete_of_a_model_without_price_gets_404(
    app_client: Client, admin_headers: Headers
) -> None:
    expect_error(await app_client.delete("/api/prices/no-such-model", headers=admin_headers), 404)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (PRICE | {"input_usd_per_mtok": "0.0000001"}, ["input_usd_per_mtok"]),
        (PRICE | {"input_usd_per_mtok": 1e-7}, ["input_usd_per_mtok"]),
        (PRICE | {"output_usd_per_mtok": -1}, ["output_usd_per_mtok"]),
        (PRICE | {"output_usd_per_mtok": "NaN"}, ["output_usd_per_mtok"]),
        (PRICE | {"output_usd_per_mtok": "Infinity"}, ["output_usd_per_mtok"]),
        (PRICE | {"output_usd_per_mtok": "1000000.000001"}, ["output_usd_per_mtok"]),
        (PRICE | {"output_usd_per_mtok": True}, ["output_usd_per_mtok"]),
        (PRICE | {"output_usd_per_mtok": "ten"}, ["output_usd_per_mtok"]),
        (PRICE | {"output_usd_per_mtok": None}, ["output_usd_per_mtok"]),
        (PRICE | {"cached_input_usd_per_mtok": [1]}, ["cached_input_usd_per_mtok"]),
        ({"input_usd_per_mtok": "1"}, ["output_usd_per_mtok"]),
        (PRICE | {"source": "admin"}, ["source"]),
        (PRICE | {"effective_from": "2020-01-01T00:00:00Z"}, ["effective_from"]),
    ],
    ids=[
        "seven-decimals",
        "tiny-float",
        "negative",
        "nan",
        "infinity",
        "too-large",
        "bool",
        "text",
        "null",
        "list",
        "missing-output",
        "extra-source",
        "extra-effective-from",
    ],
)
async def test_bad_price_input_gets_422_naming_the_field_and_changes_nothing(
    app_client: Client, admin_headers: Headers, body: dict[str, Any], fields: list[str]
) -> None:
    before = await prices_by_model(app_client, admin_headers)

    answer = await app_client.put("/api/prices/gpt-4o", json=body, headers=admin_headers)

    expect_error(answer, 422, *fields)
    assert await prices_by_model(app_client, admin_headers) == before


@pytest.mark.parametrize(
    "model",
    ["gpt 4o", "gpt-4o%09", "gpt-4o%0A", "x%7F", "%00", "m" * 201],
    ids=["space", "tab", "newline", "delete", "nul", "too-long"],
)
async def test_bad_model_names_get_422(
    app_client: Client, admin_headers: Headers, model: str
) -> None:
    before = await prices_by_model(app_client, admin_headers)

    answer = await app_client.put(f"/api/prices/{model}", json=PRICE, headers=admin_headers)

    expect_error(answer, 422, "model")
    assert await prices_by_model(app_client, admin_headers) == before
    expect_error(await app_client.delete(f"/api/prices/{model}", headers=admin_headers), 422)
    assert await prices_by_model(app_client, admin_headers) == before


async def test_a_model_name_of_200_characters_is_accepted(
    app_client: Client, admin_headers: Headers
) -> None:
    model = "m" * 200
    answer = await app_client.put(f"/api/prices/{model}", json=PRICE, headers=admin_headers)

    assert answer.status_code == 200, answer.text
    assert model in await prices_by_model(app_client, admin_headers)


async def test_changes_are_audited_and_announced_to_gateways(
    app_client: Client, admin_headers: Headers, services: Services
) -> None:
    await app_client.put("/api/prices/gpt-4o", json=PRICE, headers=admin_headers)
    await app_client.delete("/api/prices/gpt-4o", headers=admin_headers)

    entries = await audit_entries(app_client, admin_headers, target_type="price")
    assert [(e["action"], e["target_id"], e["actor"]) for e in entries] == [
        ("price.remove", "gpt-4o", "alice"),
        ("price.set", "gpt-4o", "alice"),
    ]
    removed, set_ = entries
    assert set_["before"]["source"].startswith("default")
    assert set_["after"]["input_usd_per_mtok"] == "2.5"
    assert removed["before"]["source"] == "admin"
    assert removed["after"] is None
    async with services.database.read() as connection:
        feed = list(
            await connection.execute(
                sa.select(change_feed.c.kind, change_feed.c.key).where(
                    change_feed.c.kind == "price"
                )
            )
        )
    assert [tuple(row) for row in feed] == [("price", "gpt-4o"), ("price", "gpt-4o")]


async def test_viewer_reads_prices_but_cannot_change_them(
    app_client: Client, admin_headers: Headers, viewer_headers: Headers
) -> None:
    before = await prices_by_model(app_client, admin_headers)

    assert await prices_by_model(app_client, viewer_headers) == before
    expect_error(
        await app_client.put("/api/prices/gpt-4o", json=PRICE, headers=viewer_headers), 403
    )
    expect_error(await app_client.delete("/api/prices/gpt-4o", headers=viewer_headers), 403)
    assert await prices_by_model(app_client, admin_headers) == before


@pytest.mark.parametrize(("method", "body"), [("GET", None), ("PUT", PRICE), ("DELETE", None)])
async def test_prices_need_a_signed_in_user(
    app_client: Client, method: str, body: dict[str, Any] | None
) -> None:
    path = "/api/prices" if method == "GET" else "/api/prices/gpt-4o"

    expect_error(await app_client.request(method, path, json=body), 401)
