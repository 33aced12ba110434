"""The pure parts of the detectors: networks, user-agent families, the volume threshold,
sliding-window bursts, usual hours, stale credentials and first sightings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tokenmanager.security.detectors import (
    UsageRow,
    detect_bursts,
    detect_new_sightings,
    detect_off_hours,
    detect_stale_credentials,
    floor_time,
    network_of,
    user_agent_family,
    volume_threshold,
)
from tokenmanager.security.models import DetectorKind, Severity, Thresholds

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday


def row(seconds: float, **fields: object) -> UsageRow:
    values: dict[str, object] = {
        "used_at": T0 + timedelta(seconds=seconds), "token_id": 1, "token_hash": "h" * 64,
        "route_path": "/api/x", "response_status": 200, "response_time_ms": 50,
        "ip_address": "203.0.113.5", "user_agent": "python-requests/2.32.3", "failure_kind": None,
    }  # fmt: skip
    values.update(fields)
    return UsageRow(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "network"),
    [("203.0.113.77", "203.0.113.0/24"), ("2001:db8:1:2:3::9", "2001:db8:1:2::/64"),
     ("::ffff:198.51.100.7", "198.51.100.0/24"), ("not an ip", None), (None, None)],
)  # fmt: skip
def test_network_of_groups_by_24_and_64(address: str | None, network: str | None) -> None:
    assert network_of(address) == network


@pytest.mark.parametrize(
    ("agent", "family"),
    [("python-requests/2.31.0", "python-requests"), ("OpenAI/Python 1.40.0", "openai"),
     ("Mozilla/5.0 (X11) AppleWebKit/537.36 (KHTML) Chrome/126.0 Safari/537.36", "chrome"),
     ("Mozilla/5.0 (Macintosh) AppleWebKit/605 (KHTML) Version/17 Safari/605.1", "safari"),
     ("Mozilla/5.0 (X11; rv:128.0) Gecko/20100101 Firefox/128.0", "firefox"),
     ("", "(none)"), (None, "(none)"), ("!!!", "(other)")],
)  # fmt: skip
def test_user_agent_family_drops_versions(agent: str | None, family: str) -> None:
    assert user_agent_family(agent) == family


def test_floor_time_aligns_to_the_window() -> None:
    moment = datetime(2026, 11, 2, 9, 47, 31, 5, tzinfo=UTC)
    assert floor_time(moment, 300) == datetime(2026, 11, 2, 9, 45, tzinfo=UTC)
    assert floor_time(moment, 3600) == datetime(2026, 11, 2, 9, tzinfo=UTC)
    assert floor_time(moment, 86400) == datetime(2026, 11, 2, tzinfo=UTC)


def test_volume_threshold_has_a_floor_and_grows_with_the_baseline() -> None:
    quiet, _, _ = volume_threshold([0, 1, 0, 2, 1, 0], Thresholds())
    assert quiet == 50  # the minimum-volume floor
    busy, median, mad = volume_threshold([100, 110, 90, 105, 95, 100], Thresholds())
    assert median == 100
    assert mad == 5
    assert busy == 300  # 3 x the median beats median + 6 x spread here


def test_burst_is_counted_in_a_sliding_window_across_fixed_boundaries() -> None:
    # 24 failures from one address, straddling a 5-minute boundary (9:05) within 2 minutes.
    rows = [row(240 + 5 * i, response_status=401, failure_kind="not_found", token_id=None,
                token_hash="") for i in range(24)]  # fmt: skip
    [finding] = detect_bursts(rows, T0, Thresholds())
    assert finding.kind is DetectorKind.AUTH_FAILURE_BURST
    assert finding.ip_address == "203.0.113.5"
    assert finding.evidence["count"] == 24
    assert finding.severity is Severity.HIGH


def test_burst_spread_over_more_than_the_window_is_not_reported() -> None:
    rows = [row(20 * i, response_status=401, token_id=None) for i in range(24)]  # 8 minutes
    assert detect_bursts(rows, T0, Thresholds()) == []


def test_burst_seen_in_an_earlier_run_is_not_reported_again() -> None:
    rows = [row(i, response_status=429, failure_kind="rate_limited") for i in range(40)]
    assert detect_bursts(rows, T0 + timedelta(minutes=5), Thresholds()) == []
    [finding] = detect_bursts(rows, T0, Thresholds())
    assert finding.kind is DetectorKind.RATE_LIMIT_BURST


def test_stale_credentials_by_kind() -> None:
    rows = [
        row(1, failure_kind="revoked", response_status=401),
        row(2, token_id=2, failure_kind="expired", response_status=401),
        row(3, token_id=3, token_hash="old"),
        row(4, token_id=3, token_hash="new"),
    ]
    found = {(o.kind, o.token_id) for o in detect_stale_credentials(rows, {3: "old"})}
    assert found == {
        (DetectorKind.REVOKED_TOKEN_USE, 1),
        (DetectorKind.EXPIRED_TOKEN_USE, 2),
        (DetectorKind.GRACE_SECRET_USE, 3),
    }


def test_new_network_only_after_the_learning_period() -> None:
    known: dict[tuple[int, str], set[str]] = {}
    first_seen: dict[int, datetime] = {}
    early = [row(0), row(60, ip_address="198.51.100.9")]  # day one: still learning
    observations, _ = detect_new_sightings(early, known, first_seen, Thresholds())
    assert observations == []
    later = [row(4 * 86400, ip_address="192.0.2.1"), row(4 * 86400 + 5, ip_address="192.0.2.2")]
    observations, sightings = detect_new_sightings(later, known, first_seen, Thresholds())
    [new] = observations
    assert new.kind is DetectorKind.NEW_NETWORK
    assert new.evidence["network"] == "192.0.2.0/24"
    assert new.evidence["count"] == 2
    assert ("network", "192.0.2.0/24") in {(s.kind, s.value) for s in sightings}


def test_off_hours_respects_usual_hours_and_their_neighbours() -> None:
    history = [T0 - timedelta(days=d) + timedelta(hours=h) for d in range(1, 15) for h in range(8)]
    thresholds = Thresholds()
    night = T0.replace(hour=22)
    neighbour = T0.replace(hour=17)  # next to 16:00, a usual hour
    found = detect_off_hours({(1, night): 5, (1, neighbour): 5}, {1: history}, thresholds)
    assert [(o.token_id, o.evidence["hour"]) for o in found] == [(1, night.isoformat())]
