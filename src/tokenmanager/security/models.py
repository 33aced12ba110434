"""The security slice's nouns: detector kinds, severities, findings, observations and the
detectors' thresholds. Pure data; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class DetectorKind(StrEnum):
    VOLUME_SPIKE = "volume_spike"
    NEW_NETWORK = "new_network"
    NEW_USER_AGENT = "new_user_agent"
    AUTH_FAILURE_BURST = "auth_failure_burst"
    RATE_LIMIT_BURST = "rate_limit_burst"
    OFF_HOURS = "off_hours"
    ROUTE_ERROR_SPIKE = "route_error_spike"
    ROUTE_LATENCY_SPIKE = "route_latency_spike"
    GRACE_SECRET_USE = "grace_secret_use"  # noqa: S105 - a detector name
    EXPIRED_TOKEN_USE = "expired_token_use"  # noqa: S105 - a detector name
    REVOKED_TOKEN_USE = "revoked_token_use"  # noqa: S105 - a detector name
    BUDGET_THRESHOLD = "budget_threshold"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANKS[self]


_SEVERITY_RANKS = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class FindingStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Observation:
    """One detector's verdict for one subject in one run. `fingerprint` names the condition
    (kind + subject): while a finding with it is open or acknowledged, a new observation
    updates that finding instead of creating another."""

    kind: DetectorKind
    severity: Severity
    fingerprint: str
    first_seen: datetime
    last_seen: datetime
    evidence: dict[str, Any]
    token_id: int | None = None
    route_path: str | None = None
    ip_address: str | None = None
    team_id: str | None = None  # when the subject is a team; else the token's team is used


@dataclass(frozen=True, slots=True)
class Finding:
    id: int
    kind: str
    severity: str
    status: str
    fingerprint: str
    token_id: int | None
    team_id: str | None
    route_path: str | None
    ip_address: str | None
    evidence: dict[str, Any]
    first_seen: datetime
    last_seen: datetime
    occurrences: int
    created_at: datetime
    updated_at: datetime
    status_changed_by: str | None
    response: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        """The finding as alerts and pages show it (not its fingerprint or bookkeeping)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "status": self.status,
            "token_id": self.token_id,
            "team_id": self.team_id,
            "route_path": self.route_path,
            "ip_address": self.ip_address,
            "evidence": self.evidence,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "occurrences": self.occurrences,
            "response": self.response,
        }


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What each detector calls abnormal. Defaults are documented in docs/security.md."""

    # volume_spike: served calls (1xx-3xx) in an hour vs the same hour of the week (and the
    # hours either side) in the previous `baseline_weeks` weeks.
    baseline_weeks: int = 4
    min_baseline_weeks: int = 2
    volume_min_calls: int = 50
    volume_ratio: float = 3.0
    volume_mad_k: float = 6.0
    volume_critical_ratio: float = 10.0
    # new_network / new_user_agent: only tokens seen for at least this long have a "usual".
    learning_days: int = 3
    # auth_failure_burst / rate_limit_burst: counts in a fixed window.
    burst_window_s: int = 300
    auth_burst_min_failures: int = 20
    auth_burst_critical_failures: int = 200
    rate_limit_burst_min: int = 30
    # off_hours: hours of the day (UTC) a token used on at least `usual_hour_min_days` days of
    # the last `usual_hours_days` days are usual, and so are their neighbours.
    usual_hours_days: int = 28
    usual_hours_min_history_days: int = 7
    usual_hour_min_days: int = 2
    off_hours_min_calls: int = 3
    # route_error_spike / route_latency_spike: a window's figures vs the route's last days.
    route_window_s: int = 900
    route_baseline_days: int = 7
    route_min_calls: int = 30
    error_rate_min_increase: float = 0.25
    error_rate_ratio: float = 3.0
    latency_ratio: float = 2.0
    latency_min_increase_ms: float = 200.0
    # budget_threshold: spend in the current period as a percentage of the budget.
    budget_warning_percent: int = 80
    budget_exhausted_percent: int = 100


@dataclass(slots=True)
class RunResult:
    """What one detector run did."""

    slice_start: datetime
    slice_end: datetime
    rows: int = 0
    observations: int = 0
    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    is_caught_up: bool = True


def parse_auto_suspend(raw: str) -> frozenset[DetectorKind]:
    """The detectors named in TOKENMANAGER_SECURITY_AUTO_SUSPEND ("all", or a comma list)."""
    names = {part.strip() for part in raw.split(",") if part.strip()}
    if names == {"all"}:
        return frozenset(DetectorKind)
    unknown = names - {kind.value for kind in DetectorKind}
    if unknown:
        raise ValueError(f"unknown detector(s): {', '.join(sorted(unknown))}")
    return frozenset(DetectorKind(name) for name in names)
