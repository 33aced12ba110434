"""Findings for people: list and read (viewers see only their teams' tokens' findings),
acknowledge and resolve (audited), and the automatic response — suspending a token on a critical
finding and reinstating it.

A suspension sets the token's expiry to the moment of suspension (the gateway then refuses it as
expired within its change-poll interval) and remembers the expiry it replaced, so reinstating
restores the token exactly. Both are audited and announced on the change feed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokenmanager.access.actor import Actor, Role
from tokenmanager.clock import utcnow
from tokenmanager.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from tokenmanager.security.models import DetectorKind, Finding, FindingStatus, Severity
from tokenmanager.security.monitor import SecurityMonitor
from tokenmanager.security.webhooks import WebhookService
from tokenmanager.settings import Settings
from tokenmanager.storage import audit as audit_sql
from tokenmanager.storage import security as security_sql
from tokenmanager.storage import tokens as tokens_sql
from tokenmanager.storage.database import Database
from tokenmanager.tokens.service import audit_view

logger = logging.getLogger(__name__)

MONITOR_ACTOR = Actor(name="security-monitor", role=Role.ADMIN)


def severities_at_least(minimum: Severity) -> tuple[str, ...]:
    return tuple(str(s) for s in Severity if s.rank >= minimum.rank)


def _status_view(finding: Finding) -> dict[str, Any]:
    return {"status": finding.status, "kind": finding.kind, "severity": finding.severity}


class FindingService:
    def __init__(
        self, database: Database, *, auto_suspend: Collection[DetectorKind] = frozenset()
    ) -> None:
        self._db = database
        self.auto_suspend = frozenset(auto_suspend)

    async def list(
        self,
        actor: Actor,
        *,
        status: FindingStatus | None = None,
        kind: DetectorKind | None = None,
        min_severity: Severity | None = None,
        token_id: int | None = None,
        route_path: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Finding], int]:
        """(findings seen most recently first, total). Viewers see only findings about their
        teams' tokens; findings about routes or addresses are for admins."""
        if since is not None and until is not None and since >= until:
            raise InvalidInputError("since", "must be before until")
        where = security_sql.FindingFilter(
            status=str(status) if status else None,
            kind=str(kind) if kind else None,
            min_severity_levels=severities_at_least(min_severity) if min_severity else None,
            token_id=token_id,
            route_path=route_path,
            team_ids=actor.visible_team_ids,
            since=since,
            until=until,
        )
        async with self._db.read() as connection:
            return await security_sql.list_findings(connection, where, limit=limit, offset=offset)

    async def read(self, actor: Actor, finding_id: int) -> Finding | None:
        async with self._db.read() as connection:
            finding = await security_sql.read_finding(connection, finding_id)
        if finding is None or not _can_view(actor, finding):
            return None
        return finding

    async def acknowledge(self, actor: Actor, finding_id: int) -> Finding:
        return await self._set_status(actor, finding_id, FindingStatus.ACKNOWLEDGED)

    async def resolve(self, actor: Actor, finding_id: int) -> Finding:
        return await self._set_status(actor, finding_id, FindingStatus.RESOLVED)

    async def _set_status(self, actor: Actor, finding_id: int, status: FindingStatus) -> Finding:
        """Idempotent. A resolved finding stays resolved: the condition recurring opens a new
        one."""
        async with self._db.write() as connection:
            before = await self._read_for_change(connection, actor, finding_id)
            if before.status == status:
                return before
            if before.status == FindingStatus.RESOLVED:
                raise ConflictError("a resolved finding cannot change status")
            await security_sql.set_finding_status(connection, before, str(status), actor.name)
            after = await security_sql.read_finding(connection, finding_id)
            assert after is not None
            await audit_sql.create_audit_entry(
                connection,
                actor,
                f"security.finding.{'acknowledge' if status == 'acknowledged' else 'resolve'}",
                "security_finding",
                finding_id,
                before=_status_view(before),
                after=_status_view(after),
            )
        return after

    async def respond(self, finding: Finding) -> Finding:
        """The automatic response to a new or escalated finding: suspend its token when the
        finding is critical and its detector is opted in. Returns the finding as it is now."""
        if (
            finding.severity != Severity.CRITICAL
            or finding.token_id is None
            or finding.kind not in self.auto_suspend
            or finding.response is not None
        ):
            return finding
        now = utcnow()
        async with self._db.write() as connection:
            token = await tokens_sql.read_token(connection, finding.token_id)
            if token is None or token.revoked_at is not None:
                return finding
            if token.expires_at is not None and token.expires_at <= now:
                return finding  # already unusable
            after = await tokens_sql.update_token(connection, token.id, {"expires_at": now})
            await audit_sql.create_audit_entry(
                connection,
                MONITOR_ACTOR,
                "security.token.suspend",
                "token",
                token.id,
                before=audit_view(token),
                after={**audit_view(after), "finding_id": finding.id},
            )
            await audit_sql.append_change(connection, "token", token.id)
            response = {
                "action": "suspend",
                "token_id": token.id,
                "at": now.isoformat(),
                "previous_expires_at": token.expires_at.isoformat() if token.expires_at else None,
            }
            await security_sql.set_finding_response(connection, finding.id, response)
            updated = await security_sql.read_finding(connection, finding.id)
        logger.warning("security: suspended token %d on finding %d", token.id, finding.id)
        return updated or finding

    async def reinstate(self, actor: Actor, finding_id: int) -> Finding:
        """Undo the automatic suspension of the finding's token (admins only)."""
        actor.require_admin()
        async with self._db.write() as connection:
            finding = await self._read_for_change(connection, actor, finding_id)
            response = finding.response or {}
            if response.get("action") != "suspend" or "reinstated_at" in response:
                raise ConflictError("this finding's token is not suspended")
            token = await tokens_sql.read_token(connection, int(response["token_id"]))
            if token is None:
                raise NotFoundError("token not found")
            previous = response.get("previous_expires_at")
            after = await tokens_sql.update_token(
                connection,
                token.id,
                {"expires_at": datetime.fromisoformat(previous) if previous else None},
            )
            await audit_sql.create_audit_entry(
                connection,
                actor,
                "security.token.reinstate",
                "token",
                token.id,
                before=audit_view(token),
                after={**audit_view(after), "finding_id": finding.id},
            )
            await audit_sql.append_change(connection, "token", token.id)
            reinstated = {
                **response,
                "reinstated_at": utcnow().isoformat(),
                "reinstated_by": actor.name,
            }
            await security_sql.set_finding_response(connection, finding.id, reinstated)
            updated = await security_sql.read_finding(connection, finding.id)
        assert updated is not None
        return updated

    async def _read_for_change(self, connection: Any, actor: Actor, finding_id: int) -> Finding:
        """NotFoundError for a finding the actor cannot see, PermissionDeniedError for a viewer
        (members triage their teams' findings: they are about their tokens)."""
        finding = await security_sql.read_finding(connection, finding_id)
        if finding is None or not _can_view(actor, finding):
            raise NotFoundError("finding not found")
        if not actor.is_admin and not actor.can_manage_tokens_of(finding.team_id or ""):
            raise PermissionDeniedError("this action needs the member or admin role")
        return finding


def _can_view(actor: Actor, finding: Finding) -> bool:
    return actor.is_admin or (finding.team_id is not None and actor.can_view_team(finding.team_id))


@dataclass(frozen=True, slots=True)
class SecurityAudit:
    """The slice's parts, wired: every new or escalated finding gets the automatic response
    first (so the alert can say what was done), then its alerts."""

    monitor: SecurityMonitor
    findings: FindingService
    webhooks: WebhookService

    def __post_init__(self) -> None:
        self.monitor.on_finding.append(self.handle_finding)

    async def handle_finding(self, finding: Finding) -> None:
        try:
            finding = await self.findings.respond(finding)
        except Exception as exc:  # noqa: BLE001 - the alert still goes out
            logger.warning("security: automatic response failed (%s)", type(exc).__name__)
        await self.webhooks.enqueue(finding)

    def start_tasks(self, settings: Settings) -> list[asyncio.Task[None]]:
        """The control plane's background loops: detection (unless disabled) and deliveries."""
        tasks = [
            asyncio.create_task(
                self.webhooks.deliver_periodically(settings.security_webhook_interval_s),
                name="security-webhooks",
            )
        ]
        if settings.security_detect_enabled:
            tasks.append(
                asyncio.create_task(
                    self.monitor.run_periodically(settings.security_detect_interval_s),
                    name="security-detectors",
                )
            )
        return tasks
