"""`POST /api/usage-log` and `/api/usage-log/batch`: external gateways post the seed's body with
an ingest key; every accepted record is stored once, bad ones are refused naming the field."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.tokens.codec import hash_token

from .answers import expect_error, get_json
from .usage_records import (
    UNKNOWN_TOKEN_HASH,
    ingest_headers,
    seed_record,
    stored_rows,
)

Client = httpx.AsyncClient
Headers = dict[str, str]
SINGLE = "/api/usage-log"
BATCH = "/api/usage-log/batch"
SINGLE_RECORD_MAX_BYTES = 64 * 1024


def past_moment() -> datetime:
    """Two hours ago, to the second: inside the default analytics window."""
    return (utcnow() - timedelta(hours=2)).replace(microsecond=0)


async def post_one(client: Client, key_secret: str, record: Any) -> httpx.Response:
    return await client.post(SINGLE, json=record, headers=ingest_headers(key_secret))


async def assert_nothing_stored(services: Services) -> None:
    assert await stored_rows(services) == []
    assert services.recorder.stats.recorded == 0


# One record: the seed's body


TIMESTAMP_FORMS: dict[str, Callable[[datetime], Any]] = {
    "seconds": lambda moment: int(moment.timestamp()),
    "milliseconds": lambda moment: int(moment.timestamp() * 1000),
    "iso-utc-z": lambda moment: moment.replace(tzinfo=None).isoformat() + "Z",
    "iso-offset": lambda moment: moment.astimezone(timezone(timedelta(hours=2))).isoformat(),
    "iso-naive-is-utc": lambda moment: moment.replace(tzinfo=None).isoformat(),
}


@pytest.mark.parametrize("form", list(TIMESTAMP_FORMS))
async def test_seed_body_is_logged_with_its_fields_and_time_in_utc(
    app_client: Client, services: Services, ingest_key_secret: str, form: str
) -> None:
    moment = past_moment()
    record = seed_record(
        timestamp=TIMESTAMP_FORMS[form](moment),
        response_status=502,
        response_time_ms=1234,
        ip_address="2001:db8::1",
        user_agent="n8n/1.0 (workflow 7)",
        request_method="post",
        error_message="upstream said no",
    )

    answer = await post_one(app_client, ingest_key_secret, record)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "logged"
    [row] = await stored_rows(services)
    assert row.used_at == moment
    assert row.used_at.utcoffset() == timedelta(0)
    assert row.event_id == body["event_id"]
    assert (row.token_hash, row.route_path) == (UNKNOWN_TOKEN_HASH, "/api/openai")
    assert (row.response_status, row.response_time_ms) == (502, 1234)
    assert (row.ip_address, row.user_agent) == ("2001:db8::1", "n8n/1.0 (workflow 7)")
    assert (row.request_method, row.error_message) == ("POST", "upstream said no")
    assert row.source == "ingest"


async def test_millisecond_timestamp_keeps_its_milliseconds(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    moment = past_moment() + timedelta(milliseconds=123)
    epoch_ms = int(moment.timestamp()) * 1000 + 123

    answer = await post_one(app_client, ingest_key_secret, seed_record(timestamp=epoch_ms))

    assert answer.status_code == 200, answer.text
    [row] = await stored_rows(services)
    assert row.used_at == moment


async def test_null_timestamp_and_null_fields_are_logged_at_arrival(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    record = {name: None for name in seed_record()} | {"token_hash": UNKNOWN_TOKEN_HASH}
    before = utcnow()

    answer = await post_one(app_client, ingest_key_secret, record)

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "logged"
    [row] = await stored_rows(services)
    assert before <= row.used_at <= utcnow()
    assert row.route_path is None
    assert (row.response_status, row.response_time_ms, row.ip_address) == (None, None, None)
    assert (row.user_agent, row.request_method, row.error_message) == (None, None, None)


async def test_known_token_gets_last_used_and_its_id(
    app_client: Client,
    services: Services,
    admin: Actor,
    ingest_key_secret: str,
    teams: tuple[str, str],
) -> None:
    issued = await services.tokens.issue(admin, name="n8n prod", team_id="team-a")
    moment = past_moment()
    record = seed_record(token_hash=hash_token(issued.token_secret), timestamp=moment.isoformat())

    answer = await post_one(app_client, ingest_key_secret, record)

    assert answer.status_code == 200, answer.text
    [row] = await stored_rows(services)
    assert row.token_id == issued.token.id
    token = await services.tokens.read(admin, issued.token.id)
    assert token is not None
    assert token.last_used == moment


async def test_token_hash_in_upper_case_is_stored_lower_case(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    answer = await post_one(
        app_client, ingest_key_secret, seed_record(token_hash=UNKNOWN_TOKEN_HASH.upper())
    )

    assert answer.status_code == 200, answer.text
    [row] = await stored_rows(services)
    assert row.token_hash == UNKNOWN_TOKEN_HASH


async def test_unknown_token_hash_is_kept_and_shown_as_unknown_token(
    app_client: Client, services: Services, ingest_key_secret: str, admin_headers: Headers
) -> None:
    answer = await post_one(app_client, ingest_key_secret, seed_record(timestamp=None))
    assert answer.status_code == 200, answer.text

    [row] = await stored_rows(services)
    assert (row.token_hash, row.token_id) == (UNKNOWN_TOKEN_HASH, None)
    stats = await get_json(app_client, admin_headers, "/api/usage/stats")
    [top] = stats["top_tokens"]
    assert (top["name"], top["token_id"], top["team_id"]) == ("unknown token", None, None)
    assert top["usage_count"] == 1


async def test_same_event_id_posted_twice_is_stored_once(
    app_client: Client, services: Services, ingest_key_secret: str, admin_headers: Headers
) -> None:
    event_id = str(uuid.uuid4())
    record = seed_record(event_id=event_id)

    first = await post_one(app_client, ingest_key_secret, record)
    await services.recorder.flush()
    retried = await post_one(app_client, ingest_key_secret, record)
    again_in_one_batch = await post_one(app_client, ingest_key_secret, record)

    for answer in (first, retried, again_in_one_batch):
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "logged", "event_id": event_id}
    assert [row.event_id for row in await stored_rows(services)] == [event_id]
    stats = await get_json(app_client, admin_headers, "/api/usage/stats")
    assert stats["overview"]["total_calls"] == 1


# Ingest keys


@pytest.fixture
async def deleted_key_secret(services: Services, admin: Actor) -> str:
    created = await services.ingest_keys.create(admin, name="retired gateway")
    await services.ingest_keys.delete(admin, created.ingest_key.id)
    return created.key_secret


@pytest.mark.parametrize("path", [SINGLE, BATCH])
@pytest.mark.parametrize("credential", ["missing", "wrong", "deleted", "admin-session"])
async def test_post_without_a_valid_ingest_key_gets_401_and_stores_nothing(
    app_client: Client,
    services: Services,
    admin_headers: Headers,
    deleted_key_secret: str,
    path: str,
    credential: str,
) -> None:
    headers = {
        "missing": {},
        "wrong": ingest_headers("tik_" + "x" * 43),
        "deleted": ingest_headers(deleted_key_secret),
        "admin-session": admin_headers,
    }[credential]
    body = seed_record() if path == SINGLE else [seed_record()]

    answer = await app_client.post(path, json=body, headers=headers)

    expect_error(answer, 401)
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    await assert_nothing_stored(services)


@pytest.mark.parametrize(
    "header",
    [
        lambda secret: {"X-Ingest-Key": secret},
        lambda secret: {"Authorization": f"Bearer {secret}"},
    ],
    ids=["x-ingest-key", "bearer"],
)
async def test_ingest_key_is_accepted_in_either_header(
    app_client: Client,
    services: Services,
    ingest_key_secret: str,
    header: Callable[[str], Headers],
) -> None:
    answer = await app_client.post(SINGLE, json=seed_record(), headers=header(ingest_key_secret))

    assert answer.status_code == 200, answer.text
    assert len(await stored_rows(services)) == 1


@pytest.mark.parametrize("settings_overrides", [{"ingest_open": True}], ids=["ingest-open"])
@pytest.mark.parametrize("path", [SINGLE, BATCH])
async def test_open_ingestion_accepts_posts_without_a_key(
    app_client: Client, services: Services, path: str
) -> None:
    body = seed_record() if path == SINGLE else [seed_record()]

    answer = await app_client.post(path, json=body)

    assert answer.status_code == 200, answer.text
    assert len(await stored_rows(services)) == 1


# Bad single records


BAD_RECORDS: dict[str, tuple[dict[str, Any], str]] = {
    "token_hash-missing": ({"token_hash": None}, "token_hash"),
    "token_hash-short": ({"token_hash": "abc123"}, "token_hash"),
    "token_hash-not-hex": ({"token_hash": "g" * 64}, "token_hash"),
    "token_hash-number": ({"token_hash": 12345}, "token_hash"),
    "status-as-string": ({"response_status": "200"}, "response_status"),
    "status-boolean": ({"response_status": True}, "response_status"),
    "status-42": ({"response_status": 42}, "response_status"),
    "status-700": ({"response_status": 700}, "response_status"),
    "latency-negative": ({"response_time_ms": -1}, "response_time_ms"),
    "latency-over-24h": ({"response_time_ms": 24 * 3600 * 1000 + 1}, "response_time_ms"),
    "latency-fraction": ({"response_time_ms": 12.5}, "response_time_ms"),
    "latency-as-string": ({"response_time_ms": "1500"}, "response_time_ms"),
    "timestamp-before-2000": ({"timestamp": "1999-12-31T23:59:59Z"}, "timestamp"),
    "timestamp-garbage": ({"timestamp": "yesterday at noon"}, "timestamp"),
    "timestamp-object": ({"timestamp": {"at": 1730800000}}, "timestamp"),
    "route-over-255": ({"route": "/" + "r" * 255}, "route"),
    "route-number": ({"route": 42}, "route"),
    "user_agent-over-4096": ({"user_agent": "u" * 4097}, "user_agent"),
    "user_agent-with-nul": ({"user_agent": "curl\u0000/8"}, "user_agent"),
    "error_message-with-nul": ({"error_message": "boom\u0000"}, "error_message"),
    "ip-not-an-address": ({"ip_address": "999.1.1.1"}, "ip_address"),
    "ip-hostname": ({"ip_address": "gateway.example"}, "ip_address"),
    "method-with-space": ({"request_method": "PO ST"}, "request_method"),
    "event_id-not-uuid": ({"event_id": "retry-1"}, "event_id"),
    "unknown-field": ({"token_id": 7}, "token_id"),
}


@pytest.mark.parametrize(("changes", "field"), list(BAD_RECORDS.values()), ids=list(BAD_RECORDS))
async def test_bad_record_gets_422_naming_the_field_and_stores_nothing(
    app_client: Client,
    services: Services,
    ingest_key_secret: str,
    changes: dict[str, Any],
    field: str,
) -> None:
    answer = await post_one(app_client, ingest_key_secret, seed_record(**changes))

    expect_error(answer, 422, field)
    await assert_nothing_stored(services)


async def test_timestamp_far_in_the_future_gets_422(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    tomorrow = int((utcnow() + timedelta(days=1)).timestamp())

    answer = await post_one(app_client, ingest_key_secret, seed_record(timestamp=tomorrow))

    error = expect_error(answer, 422, "timestamp")
    assert "future" in error["message"]
    await assert_nothing_stored(services)


async def test_record_with_several_bad_fields_names_each(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    record = seed_record(response_status=700, response_time_ms=-5, ip_address="nowhere")

    answer = await post_one(app_client, ingest_key_secret, record)

    expect_error(answer, 422, "response_status", "response_time_ms", "ip_address")
    await assert_nothing_stored(services)


@pytest.mark.parametrize(
    "content",
    [b'{"token_hash": "' + UNKNOWN_TOKEN_HASH.encode(), b"", b"\xff\xfe not utf-8"],
    ids=["truncated", "empty", "not-utf8"],
)
async def test_malformed_json_gets_422_naming_the_body(
    app_client: Client, services: Services, ingest_key_secret: str, content: bytes
) -> None:
    answer = await app_client.post(
        SINGLE,
        content=content,
        headers={**ingest_headers(ingest_key_secret), "Content-Type": "application/json"},
    )

    expect_error(answer, 422, "body")
    await assert_nothing_stored(services)


@pytest.mark.parametrize("body", [[], "a string", 42], ids=["array", "string", "number"])
async def test_body_that_is_not_an_object_gets_422(
    app_client: Client, services: Services, ingest_key_secret: str, body: Any
) -> None:
    expect_error(await post_one(app_client, ingest_key_secret, body), 422, "body")
    await assert_nothing_stored(services)


def _oversized_record() -> bytes:
    record = seed_record(error_message="e" * SINGLE_RECORD_MAX_BYTES)
    return json.dumps(record).encode()


async def _in_chunks(content: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(content), 8192):
        yield content[start : start + 8192]


@pytest.mark.parametrize("sent", ["with-content-length", "chunked"])
async def test_body_over_64_kib_gets_413(
    app_client: Client, services: Services, ingest_key_secret: str, sent: str
) -> None:
    content = _oversized_record()
    body: Any = content if sent == "with-content-length" else _in_chunks(content)

    answer = await app_client.post(
        SINGLE,
        content=body,
        headers={**ingest_headers(ingest_key_secret), "Content-Type": "application/json"},
    )

    expect_error(answer, 413)
    await assert_nothing_stored(services)


# Batches


async def post_batch(
    client: Client, key_secret: str, content: bytes, content_type: str
) -> httpx.Response:
    return await client.post(
        BATCH,
        content=content,
        headers={**ingest_headers(key_secret), "Content-Type": content_type},
    )


def rejected_fields(answer: httpx.Response) -> dict[int, set[str]]:
    """{item index: the fields its error names}."""
    return {
        error["index"]: {entry["field"] for entry in error["fields"]}
        for error in answer.json()["errors"]
    }


async def test_json_array_batch_stores_good_items_and_reports_each_bad_one(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    moment = past_moment()
    items = [
        seed_record(route="/api/one", timestamp=int(moment.timestamp())),
        seed_record(response_status=700),
        seed_record(route="/api/three", timestamp=moment.isoformat()),
        "not an object",
        seed_record(response_time_ms=-1, token_hash="short"),
    ]

    answer = await app_client.post(BATCH, json=items, headers=ingest_headers(ingest_key_secret))

    assert answer.status_code == 200, answer.text
    assert (answer.json()["accepted"], answer.json()["rejected"]) == (2, 3)
    assert rejected_fields(answer) == {
        1: {"response_status"},
        3: {"body"},
        4: {"response_time_ms", "token_hash"},
    }
    rows = await stored_rows(services)
    assert sorted(row.route_path for row in rows) == ["/api/one", "/api/three"]
    assert {row.used_at for row in rows} == {moment}


async def test_ndjson_batch_stores_good_lines_despite_a_malformed_one(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    lines = [
        json.dumps(seed_record(route="/api/one")),
        '{"token_hash": "unterminated',
        json.dumps(seed_record(ip_address="not-an-ip")),
        "",
        json.dumps(seed_record(route="/api/four")),
    ]

    answer = await post_batch(
        app_client, ingest_key_secret, "\n".join(lines).encode(), "application/x-ndjson"
    )

    assert answer.status_code == 200, answer.text
    assert (answer.json()["accepted"], answer.json()["rejected"]) == (2, 2)
    # Blank lines are skipped, so indexes count records, not lines.
    assert rejected_fields(answer) == {1: {"body"}, 2: {"ip_address"}}
    rows = await stored_rows(services)
    assert sorted(row.route_path for row in rows) == ["/api/four", "/api/one"]


async def test_batch_with_every_item_good_rejects_none(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    items = [seed_record(route=f"/api/{index}") for index in range(25)]

    answer = await app_client.post(BATCH, json=items, headers=ingest_headers(ingest_key_secret))

    assert answer.json() == {"accepted": 25, "rejected": 0, "errors": []}
    assert len(await stored_rows(services)) == 25


@pytest.mark.parametrize("settings_overrides", [{"ingest_max_batch_items": 3}], ids=["3-items"])
@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
async def test_batch_over_the_item_limit_gets_413_and_stores_nothing(
    app_client: Client, services: Services, ingest_key_secret: str, content_type: str
) -> None:
    items = [seed_record() for _ in range(4)]
    is_array = content_type == "application/json"
    content = json.dumps(items) if is_array else "\n".join(map(json.dumps, items))

    answer = await post_batch(app_client, ingest_key_secret, content.encode(), content_type)

    expect_error(answer, 413)
    await assert_nothing_stored(services)


@pytest.mark.parametrize("settings_overrides", [{"ingest_max_batch_items": 3}], ids=["3-items"])
async def test_batch_at_the_item_limit_is_accepted(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    items = [seed_record() for _ in range(3)]

    answer = await app_client.post(BATCH, json=items, headers=ingest_headers(ingest_key_secret))

    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 3


@pytest.mark.parametrize("settings_overrides", [{"ingest_max_batch_bytes": 1000}], ids=["1kb"])
@pytest.mark.parametrize("sent", ["with-content-length", "chunked"])
async def test_batch_body_over_the_byte_limit_gets_413_and_stores_nothing(
    app_client: Client, services: Services, ingest_key_secret: str, sent: str
) -> None:
    content = json.dumps([seed_record() for _ in range(10)]).encode()
    assert len(content) > 1000
    body: Any = content if sent == "with-content-length" else _in_chunks(content)

    answer = await app_client.post(
        BATCH,
        content=body,
        headers={**ingest_headers(ingest_key_secret), "Content-Type": "application/json"},
    )

    expect_error(answer, 413)
    await assert_nothing_stored(services)


@pytest.mark.parametrize(
    "content",
    [json.dumps(seed_record()).encode(), b'"records"', b"[{", b"\xff"],
    ids=["object", "string", "malformed", "not-utf8"],
)
async def test_batch_that_is_not_a_json_array_gets_422(
    app_client: Client, services: Services, ingest_key_secret: str, content: bytes
) -> None:
    answer = await post_batch(app_client, ingest_key_secret, content, "application/json")

    expect_error(answer, 422, "body")
    await assert_nothing_stored(services)


async def test_batch_items_keep_their_own_timestamps_in_utc(
    app_client: Client, services: Services, ingest_key_secret: str
) -> None:
    moment = past_moment()
    forms = list(TIMESTAMP_FORMS.values())
    items = [seed_record(route=f"/{i}", timestamp=form(moment)) for i, form in enumerate(forms)]

    answer = await app_client.post(BATCH, json=items, headers=ingest_headers(ingest_key_secret))

    assert answer.json()["accepted"] == len(forms)
    rows = await stored_rows(services)
    assert [row.used_at for row in rows] == [moment] * len(forms)
    assert all(row.used_at.utcoffset() == timedelta(0) for row in rows)
