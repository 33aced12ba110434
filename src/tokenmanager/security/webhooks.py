"""Alerts: webhook destinations (generic JSON or Slack-compatible), routed by severity,
deduplicated with a cool-down, signed with HMAC-SHA256 and retried with backoff. Every attempt
is stored. Deliveries run in their own loop with a bounded timeout: a failing receiver never
holds up detection or the gateway.

The signature header is `X-TokenManager-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is
HMAC-SHA256(secret, "<t>.<raw body>"). Secrets and URLs are stored encrypted; neither reaches a
log line, an error or the API (a URL is shown as scheme://host/…).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tokenmanager.access.actor import Actor
from tokenmanager.clock import utcnow
from tokenmanager.crypto import Keyring
from tokenmanager.errors import InvalidInputError, NotFoundError
from tokenmanager.gateway.upstream import build_upstream_session
from tokenmanager.security.models import Finding, Severity
from tokenmanager.ssrf import ForbiddenUpstreamError, UpstreamPolicy
from tokenmanager.storage import audit as audit_sql
from tokenmanager.storage import security as security_sql
from tokenmanager.storage.database import Database

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-TokenManager-Signature"
PAYLOAD_FORMATS = ("json", "slack")
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 30.0
DELIVERY_TIMEOUT_S = 10.0
DELIVERIES_PER_RUN = 50


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp` (Unix seconds)."""
    digest = hmac.new(
        secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, *, tolerance_s: int = 300) -> bool:
    """What a receiver does: recompute, compare in constant time, refuse stale timestamps."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


def backoff(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failure: 30 s, 2 min, 8 min, 32 min."""
    return timedelta(seconds=BACKOFF_BASE_S * 4 ** (attempts - 1))


def display_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


def check_webhook_url(raw: str) -> str:
    url = raw.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidInputError("url", "is not a valid URL") from None
    if len(url) > 2048:
        raise InvalidInputError("url", "must be at most 2048 characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError("url", "must be an http:// or https:// URL naming a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidInputError("url", "must not carry credentials")
    return url


def build_payload(
    payload_format: str, event: str, finding: dict[str, Any] | None
) -> dict[str, Any]:
    """The body for one alert: generic JSON, or Slack's incoming-webhook shape."""
    if payload_format == "slack":
        if finding is None:
            text = "Token Manager: test alert, the webhook works."
        else:
            subject = (
                f"token {finding['token_id']}" if finding["token_id"] is not None
                else finding["route_path"] or finding["ip_address"] or "the gateway"
            )  # fmt: skip
            text = (
                f"*[{finding['severity'].upper()}]* {finding['kind']} on {subject} "
                f"(finding {finding['id']}, team {finding['team_id'] or '-'})"
            )
            if finding["response"]:
                text += f" — automatic response: {finding['response']['action']}"
        return {
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        }
    return {"event": event, "sent_at": utcnow().isoformat(), "finding": finding}


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    webhook: dict[str, Any]
    secret: str  # shown once


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: row[key]
        for key in ("id", "name", "url_display", "payload_format", "min_severity", "cooldown_s",
                    "is_enabled", "created_at", "updated_at")
    }  # fmt: skip


class WebhookService:
    def __init__(self, database: Database, keyring: Keyring, policy: UpstreamPolicy) -> None:
        self._db = database
        self._keyring = keyring
        self._policy = policy

    async def create(
        self,
        actor: Actor,
        *,
        name: str,
        url: str,
        payload_format: str = "json",
        min_severity: Severity = Severity.HIGH,
        cooldown_s: int = 3600,
        secret: str | None = None,
    ) -> CreatedWebhook:
        """SSRF-checked now and again at every connect. A signing secret is generated unless
        one is given; either way it is returned once."""
        actor.require_admin()
        url = check_webhook_url(url)
        if payload_format not in PAYLOAD_FORMATS:
            raise InvalidInputError("payload_format", "must be json or slack")
        if cooldown_s < 0:
            raise InvalidInputError("cooldown_s", "must not be negative")
        if secret is not None and len(secret) < 16:
            raise InvalidInputError("secret", "must be at least 16 characters")
        parts = urlsplit(url)
        try:
            await self._policy.check_host(parts.hostname or "", parts.port or 443)
        except ForbiddenUpstreamError as exc:
            raise InvalidInputError("url", str(exc)) from None
        secret = secret or secrets.token_urlsafe(32)
        async with self._db.write() as connection:
            webhook_id = await security_sql.create_webhook(
                connection,
                {
                    "name": name,
                    "url_display": display_url(url),
                    "url_encrypted": self._keyring.encrypt(url),
                    "payload_format": payload_format,
                    "min_severity": str(min_severity),
                    "cooldown_s": cooldown_s,
                    "secret_encrypted": self._keyring.encrypt(secret),
                },
            )
            row = await security_sql.read_webhook(connection, webhook_id)
            assert row is not None
            await audit_sql.create_audit_entry(
                connection, actor, "security.webhook.create", "security_webhook", webhook_id,
                after=_json_safe(_public(row)),
            )  # fmt: skip
        return CreatedWebhook(_public(row), secret)

    async def list(self, actor: Actor) -> list[dict[str, Any]]:
        actor.require_admin()
        async with self._db.read() as connection:
            return [_public(row) for row in await security_sql.list_webhooks(connection)]

    async def delete(self, actor: Actor, webhook_id: int) -> None:
        actor.require_admin()
        async with self._db.write() as connection:
            row = await security_sql.read_webhook(connection, webhook_id)
            if row is None:
                raise NotFoundError("webhook not found")
            await security_sql.delete_webhook(connection, webhook_id)
            await audit_sql.create_audit_entry(
                connection, actor, "security.webhook.delete", "security_webhook", webhook_id,
                before=_json_safe(_public(row)),
            )  # fmt: skip

    async def deliveries(
        self, actor: Actor, webhook_id: int, limit: int = 50
    ) -> builtins.list[dict[str, Any]]:
        actor.require_admin()
        async with self._db.read() as connection:
            if await security_sql.read_webhook(connection, webhook_id) is None:
                raise NotFoundError("webhook not found")
            return await security_sql.list_deliveries(connection, webhook_id, limit)

    async def send_test(self, actor: Actor, webhook_id: int) -> dict[str, Any]:
        """Queue a test alert and attempt it at once; returns the delivery with its attempt."""
        actor.require_admin()
        async with self._db.write() as connection:
            row = await security_sql.read_webhook(connection, webhook_id)
            if row is None:
                raise NotFoundError("webhook not found")
            delivery_id = await security_sql.create_delivery(
                connection,
                {"webhook_id": webhook_id, "finding_id": None, "event": "test", "dedup_key": None,
                 "payload": build_payload(row["payload_format"], "test", None)},
            )  # fmt: skip
            delivery = await security_sql.read_delivery(connection, delivery_id)
        assert delivery is not None
        await self._attempt(delivery, row)
        async with self._db.read() as connection:
            return next(
                d for d in await security_sql.list_deliveries(connection, webhook_id, 20)
                if d["id"] == delivery_id
            )  # fmt: skip

    async def enqueue(self, finding: Finding) -> int:
        """Queue the finding for every enabled webhook whose minimum severity it reaches,
        unless the same fingerprint at the same severity was sent within the cool-down.
        Returns how many deliveries were queued."""
        severity = Severity(finding.severity)
        dedup_key = f"{finding.fingerprint}:{severity}"
        view = finding.as_json()
        queued = 0
        async with self._db.write() as connection:
            now = utcnow()
            for row in await security_sql.list_webhooks(connection):
                if not row["is_enabled"] or severity.rank < Severity(row["min_severity"]).rank:
                    continue
                last = await security_sql.last_delivery_at(connection, row["id"], dedup_key)
                if last is not None and now - last < timedelta(seconds=row["cooldown_s"]):
                    continue
                await security_sql.create_delivery(
                    connection,
                    {"webhook_id": row["id"], "finding_id": finding.id, "event": "finding",
                     "dedup_key": dedup_key,
                     "payload": build_payload(row["payload_format"], "finding", view)},
                )  # fmt: skip
                queued += 1
        return queued

    async def deliver_due(self, now: datetime | None = None) -> int:
        """Attempt the deliveries that are due; returns how many were attempted."""
        async with self._db.read() as connection:
            due = await security_sql.list_due_deliveries(
                connection, now or utcnow(), DELIVERIES_PER_RUN
            )
            webhooks = {row["id"]: row for row in await security_sql.list_webhooks(connection)}
        attempts = [
            self._attempt(d, webhooks[d["webhook_id"]]) for d in due if d["webhook_id"] in webhooks
        ]
        await asyncio.gather(*attempts)
        return len(attempts)

    async def deliver_periodically(self, interval_s: float) -> None:
        """Run forever (a control-plane background task)."""
        while True:
            try:
                await self.deliver_due()
            except Exception as exc:  # noqa: BLE001 - try again at the next interval
                logger.warning("webhook delivery run failed (%s)", type(exc).__name__)
            await asyncio.sleep(interval_s)

    async def _attempt(self, delivery: dict[str, Any], webhook: dict[str, Any]) -> None:
        url = self._keyring.decrypt(webhook["url_encrypted"])
        secret = self._keyring.decrypt(webhook["secret_encrypted"])
        body = json.dumps(delivery["payload"], separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tokenmanager-webhook",
            "X-TokenManager-Event": delivery["event"],
            "X-TokenManager-Delivery": str(delivery["id"]),
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
        }
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            self._policy.check_host_literal(urlsplit(url).hostname or "")
            async with build_upstream_session(self._policy) as session, session.post(
                url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_S),
            ) as response:  # fmt: skip
                status_code = response.status
                if not 200 <= status_code < 300:
                    error = f"receiver answered {status_code}"
        except ForbiddenUpstreamError:
            error = "the webhook's address is not allowed"
        except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried
            error = _describe_failure(exc)
        attempts = delivery["attempts"] + 1
        if error is None:
            status, next_at = "delivered", None
        elif attempts >= MAX_ATTEMPTS:
            status, next_at = "failed", None
        else:
            status, next_at = "pending", utcnow() + backoff(attempts)
        async with self._db.write() as connection:
            await security_sql.record_attempt(
                connection, delivery["id"], attempted_at=utcnow(), status_code=status_code,
                error=error, duration_ms=round((time.perf_counter() - started) * 1000),
                status=status, next_attempt_at=next_at,
            )  # fmt: skip
        if error is not None:
            logger.warning(
                "webhook %d: delivery %d failed (%s)", webhook["id"], delivery["id"], error
            )


def _describe_failure(exc: Exception) -> str:
    """Why an attempt failed, without the URL (which may carry a secret)."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, ForbiddenUpstreamError
    ):
        return "the webhook's address is not allowed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "could not connect"
    return f"failed ({type(exc).__name__})"


def _json_safe(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in view.items()}
