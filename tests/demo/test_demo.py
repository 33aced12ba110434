"""`tokenmanager demo` end to end: the real command as a subprocess on free ports and a temp
data dir. What it prints is parsed and used as a newcomer would: the real `openai` package
(streaming and not), plain HTTP and the printed Python snippet go through the gateway, and the
calls show up in the analytics API (signed in with the printed admin password), polled with a
deadline. Then Ctrl-C, a rerun on the same data dir, `--reset`, and the refusals."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tokenmanager.testing import copy_sqlite_template, free_port

START_DEADLINE_S = 240  # 30 days of history on a busy two-core machine
STOP_DEADLINE_S = 30
USAGE_DEADLINE_S = 30
READY_LINE = "Ctrl-C stops it."
HISTORY_EVENTS = 60_000


def demo_environment() -> dict[str, str]:
    # Nothing from the machine's own TOKENMANAGER_* settings may reach the demo.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMANAGER_")}
    env.update(TOKENMANAGER_ARGON2_TIME_COST="1", TOKENMANAGER_ARGON2_MEMORY_KIB="64", NO_COLOR="1")
    return env


def demo_ports() -> dict[str, int]:
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    return dict(zip(("--port", "--gateway-port", "--upstream-port"), sorted(ports), strict=True))


def run_demo(
    data_dir: Path, ports: dict[str, int], *extra: str
) -> subprocess.CompletedProcess[str]:
    """A demo that is expected to refuse to start."""
    arguments = [str(part) for pair in ports.items() for part in pair]
    return subprocess.run(
        [sys.executable, "-m", "tokenmanager", "demo", "--data-dir", str(data_dir), *arguments,
         *extra],
        env=demo_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


def one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Banner:
    text: str
    control_url: str
    gateway_url: str
    admin_password: str | None
    token_id: int
    token_secret: str

    @classmethod
    def parse(cls, text: str) -> Banner:
        control = re.search(r"Dashboard\s+(http://\S+)/\n", text)
        gateway = re.search(r"Gateway\s+(http://\S+)\n", text)
        password = re.search(r"Admin login\s+admin / (\S+)", text)
        token = re.search(r"Token '[^']+' \(id (\d+)\): (ntk_\w+)", text)
        assert control, text
        assert gateway, text
        assert token, text
        return cls(
            text=text,
            control_url=control.group(1),
            gateway_url=gateway.group(1),
            admin_password=password.group(1) if password else None,
            token_id=int(token.group(1)),
            token_secret=token.group(2),
        )

    def python_snippet(self) -> str:
        start = self.text.index("from openai import OpenAI")
        return self.text[start:].strip()

    def curl_commands(self) -> list[str]:
        return [line.strip() for line in self.text.splitlines() if line.strip().startswith("curl")]


@dataclass
class RunningDemo:
    process: subprocess.Popen[bytes]
    data_dir: Path
    ports: dict[str, int]
    stdout_path: Path
    stderr_path: Path
    banner: Banner

    def stop(self) -> int:
        """Ctrl-C, as at a terminal; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def start_demo(data_dir: Path, logs: Path, *extra: str) -> RunningDemo:
    ports = demo_ports()
    logs.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = logs / "demo.out", logs / "demo.err"
    arguments = [str(part) for pair in ports.items() for part in pair]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tokenmanager", "demo", "--data-dir", str(data_dir),
             *arguments, *extra],
            env=demo_environment(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )  # fmt: skip
    deadline = time.monotonic() + START_DEADLINE_S
    while READY_LINE not in stdout_path.read_text():
        if process.poll() is not None:
            pytest.fail(f"demo exited with {process.returncode}: {stderr_path.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"demo not ready within {START_DEADLINE_S} s: {stderr_path.read_text()}")
        time.sleep(0.1)
    # The banner is printed in one write once every server listens; wait for its last line.
    while not stdout_path.read_text().rstrip().endswith("print(reply.choices[0].message.content)"):
        assert time.monotonic() < deadline, stdout_path.read_text()
        time.sleep(0.05)
    banner = Banner.parse(stdout_path.read_text())
    return RunningDemo(process, data_dir, ports, stdout_path, stderr_path, banner)


@contextlib.contextmanager
def sign_in(demo: RunningDemo, password: str) -> Iterator[httpx.Client]:
    """A client of the demo's control plane, signed in as its admin through the API."""
    with httpx.Client(base_url=demo.banner.control_url, timeout=30) as client:
        answer = client.post("/api/auth/login", json={"username": "admin", "password": password})
        assert answer.status_code == 200, answer.text
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        client.cookies.clear()
        yield client


def poll(read: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    deadline = time.monotonic() + USAGE_DEADLINE_S
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {USAGE_DEADLINE_S} s; last seen: {value}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    """One demo on a fresh data dir, shared by the tests below (seeding takes a while)."""
    root = tmp_path_factory.mktemp("demo")
    running = start_demo(root / "data", root / "logs-first")
    yield running
    if running.process.poll() is None:
        running.stop()


@pytest.fixture(scope="module")
def admin(demo: RunningDemo) -> Iterator[httpx.Client]:
    assert demo.banner.admin_password is not None, "a fresh demo prints the admin password"
    with sign_in(demo, demo.banner.admin_password) as client:
        yield client


def token_calls(admin: httpx.Client, token_id: int) -> int:
    answer = admin.get(f"/api/usage/token/{token_id}")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["stats"]["total_calls"])


def overview_calls(admin: httpx.Client) -> int:
    answer = admin.get("/api/usage/stats")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["overview"]["total_calls"])


def test_sdk_and_http_calls_through_the_gateway_show_up_in_usage(
    demo: RunningDemo, admin: httpx.Client
) -> None:
    banner = demo.banner
    token_before = token_calls(admin, banner.token_id)
    overview_before = overview_calls(admin)

    client = OpenAI(base_url=f"{banner.gateway_url}/api/openai", api_key=banner.token_secret)
    reply = client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "Hello demo"}]
    )
    assert reply.choices[0].message.content == "mock reply to: Hello demo"
    chunks = client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == "mock reply to: stream me"
    echoed = httpx.get(
        f"{banner.gateway_url}/api/echo/orders/42",
        headers={"X-API-Key": banner.token_secret},
        timeout=30,
    )
    assert echoed.status_code == 200
    assert echoed.json()["path"] == "/orders/42"
    assert banner.token_secret not in echoed.text  # the upstream never sees the client's token
    refused = httpx.get(f"{banner.gateway_url}/api/echo/x", headers={"X-API-Key": "ntk_nope"})
    assert refused.status_code == 401

    poll(
        lambda: token_calls(admin, banner.token_id),
        lambda calls: calls >= token_before + 3,
        "the token's three calls did not appear in /api/usage/token/{id}",
    )
    poll(
        lambda: overview_calls(admin),
        lambda calls: calls >= overview_before + 3,
        "the calls did not appear in /api/usage/stats",
    )
    recent = admin.get(f"/api/usage/token/{banner.token_id}", params={"limit": 3}).json()
    latest = recent["recent_usage"]
    assert sorted(entry["route_path"] for entry in latest) == [
        "/api/echo",
        "/api/openai",
        "/api/openai",
    ]
    assert all(entry["response_status"] == 200 for entry in latest)


def test_the_printed_python_snippet_works_as_pasted(demo: RunningDemo, admin: httpx.Client) -> None:
    before = token_calls(admin, demo.banner.token_id)
    result = subprocess.run(
        [sys.executable, "-"],
        input=demo.banner.python_snippet(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "mock reply to: Hello"
    poll(
        lambda: token_calls(admin, demo.banner.token_id),
        lambda calls: calls >= before + 1,
        "the snippet's call did not appear in /api/usage/token/{id}",
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl, as a reader pasting has")
def test_the_printed_curl_commands_work_as_pasted(demo: RunningDemo) -> None:
    commands = demo.banner.curl_commands()
    assert len(commands) == 3
    kinds = []
    for command in commands:
        result = subprocess.run(  # noqa: S602 - the printed command, run as a reader pastes it
            command, shell=True, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        kinds.append(answer.get("object") or answer.get("type") or answer.get("path"))
    assert kinds == ["chat.completion", "message", "/orders/42"]


def test_the_history_spans_30_days_with_errors_an_idle_token_and_a_burst(
    demo: RunningDemo, admin: httpx.Client
) -> None:
    stats = admin.get("/api/usage/stats", params={"window": "30d", "bucket": "day"}).json()
    overview = stats["overview"]
    assert overview["total_calls"] >= HISTORY_EVENTS
    assert 1.0 <= 100 - overview["success_rate"] <= 3.5
    days_with_calls = [day for day in stats["hourly_usage"] if day["call_count"] > 0]
    assert len(days_with_calls) >= 30
    routes = {route["route_path"]: route for route in stats["top_routes"]}
    # None: calls refused before a route matched (the earlier test makes one with a bad token).
    assert set(routes) - {None} == {"/api/openai", "/api/anthropic", "/api/echo", "/api/reports"}
    # Each route has its own latency: the slow service, the model, the echo.
    assert (
        routes["/api/reports"]["avg_response_time"]
        > routes["/api/openai"]["avg_response_time"]
        > 5 * routes["/api/echo"]["avg_response_time"]
    )
    errors = admin.get("/api/usage/errors", params={"window": "30d"}).json()
    assert len(errors["by_status"]) >= 4

    idle = admin.get("/api/usage/idle-tokens", params={"days": 14}).json()
    assert [token["name"] for token in idle["tokens"]] == ["legacy cron"]
    assert idle["tokens"][0]["never_used"] is False

    tokens = {token["name"]: token["id"] for token in admin.get("/api/tokens").json()}
    export = admin.get(
        "/api/usage/export",
        params={"format": "ndjson", "window": "7d", "token_id": tokens["research sandbox"]},
    )
    rows = [json.loads(line) for line in export.text.splitlines() if line]
    burst = [row for row in rows if row["ip_address"] == "203.0.113.50"]
    assert len(burst) == 1500
    assert {row["route_path"] for row in burst} == {"/api/openai"}


def test_the_history_has_llm_models_tokens_and_costs_at_the_default_prices(
    demo: RunningDemo, admin: httpx.Client
) -> None:
    from tokenmanager.pricing.defaults import DEFAULT_PRICES
    from tokenmanager.pricing.models import match_price
    from tokenmanager.pricing.money import format_usd

    providers = {
        route["path_prefix"]: route["provider"] for route in admin.get("/api/routes").json()
    }
    assert providers["/api/openai"] == "openai"
    assert providers["/api/anthropic"] == "anthropic"
    assert providers["/api/echo"] is None

    answer = admin.get("/api/usage/costs", params={"window": "30d", "group_by": "model"})
    assert answer.status_code == 200, answer.text
    rows = {row["model"]: row for row in answer.json()["rows"]}
    history_models = {
        "gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-sonnet-4-5-20250929",
        "claude-3-5-haiku-20241022",
    }  # fmt: skip
    assert history_models <= set(rows)
    prices = {price.model: price for price in DEFAULT_PRICES}
    for model in history_models:
        row = rows[model]
        assert row["calls"] > 100, model
        assert row["unpriced_calls"] == 0, model
        assert row["prompt_tokens"] > row["calls"] * 100, model
        # The cost is the default price's: cached prompt tokens at the cached price.
        price = match_price(model, prices)
        assert price is not None
        cached_price = price.cached_input_micro_usd_per_mtok or price.input_micro_usd_per_mtok
        expected = (
            (row["prompt_tokens"] - row["cached_prompt_tokens"]) * price.input_micro_usd_per_mtok
            + row["cached_prompt_tokens"] * cached_price
            + row["completion_tokens"] * price.output_micro_usd_per_mtok
        )
        assert row["cost_usd"] == format_usd(expected), model
    assert rows["text-embedding-3-small"]["completion_tokens"] == 0
    totals = answer.json()["totals"]
    assert 0 < totals["estimated_calls"] < totals["calls"] // 10  # a few estimated streams
    overview = admin.get("/api/usage/stats", params={"window": "30d", "bucket": "day"}).json()
    assert overview["overview"]["cost_usd"] is not None
    assert overview["overview"]["prompt_tokens"] > 0


def test_one_token_sits_near_its_monthly_budget_and_is_reported(
    demo: RunningDemo, admin: httpx.Client
) -> None:
    tokens = {token["name"]: token for token in admin.get("/api/tokens").json()}
    notebook = tokens["analytics notebook"]
    assert notebook["budget_usd"] is not None
    assert notebook["budget_period"] == "month"
    assert [t["name"] for t in tokens.values() if t["budget_usd"] is not None] == [
        "analytics notebook"
    ]
    findings = admin.get(
        "/api/security/findings", params={"kind": "budget_threshold", "limit": 50}
    ).json()["findings"]
    budget = [f for f in findings if f["kind"] == "budget_threshold"]
    assert [f["token_id"] for f in budget] == [notebook["id"]]
    evidence = budget[0]["evidence"]
    assert evidence["budget_usd"] == notebook["budget_usd"]
    assert 80 <= evidence["spent_percent"] < 90
    assert evidence["threshold_percent"] == 80
    assert budget[0]["severity"] == "medium"


def test_the_detectors_report_the_burst_and_nothing_else_in_the_history(
    demo: RunningDemo, admin: httpx.Client
) -> None:
    assert re.search(r"Security\s+http://\S+/security\s+\([1-9]\d* open finding", demo.banner.text)
    answer = admin.get("/api/security/findings", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    findings = answer.json()["findings"]
    history_until = datetime.fromisoformat(
        json.loads((demo.data_dir / "demo.json").read_text())["history_until"]
    )
    # What the detectors found in the history (not in the calls the tests above made).
    from_history = [f for f in findings if datetime.fromisoformat(f["first_seen"]) < history_until]
    tokens = {token["name"]: token["id"] for token in admin.get("/api/tokens").json()}
    burst_token = tokens["research sandbox"]
    by_kind = {f["kind"]: f for f in from_history}

    new_network = by_kind["new_network"]
    assert new_network["token_id"] == burst_token
    assert new_network["ip_address"] == "203.0.113.50"
    assert new_network["evidence"]["network"] == "203.0.113.0/24"
    assert new_network["team_id"] == "research-team"
    # The burst is 4 days 5 hours before the history's end, 40 minutes long.
    burst_start = history_until - timedelta(days=4, hours=5)
    first_seen = datetime.fromisoformat(new_network["first_seen"])
    assert burst_start <= first_seen < burst_start + timedelta(minutes=40)

    volume = by_kind["volume_spike"]
    assert volume["token_id"] == burst_token
    assert volume["evidence"]["calls"] >= 10 * max(1, volume["evidence"]["baseline_median"])
    assert by_kind["new_user_agent"]["evidence"]["agent"] == "python-httpx"
    # The normal traffic of the other tokens raised nothing (the budget finding is the
    # detectors' run after the history: first seen then, see the test above).
    assert {f["token_id"] for f in from_history} == {burst_token}
    assert len(from_history) == len(by_kind)


def test_a_second_demo_on_the_same_data_dir_is_refused(demo: RunningDemo) -> None:
    result = run_demo(demo.data_dir, demo_ports())
    assert result.returncode == 4
    assert "already running" in one_line(result.stderr)
    assert str(demo.data_dir) in one_line(result.stderr)
    assert demo.process.poll() is None  # the first one carries on


def test_ctrl_c_stops_it_a_rerun_reuses_the_data_and_reset_starts_over(
    demo: RunningDemo, admin: httpx.Client, tmp_path: Path
) -> None:
    first = demo.banner
    calls_before = token_calls(admin, first.token_id)
    assert demo.stop() == 0
    assert "Traceback" not in demo.stderr()
    state_file = demo.data_dir / "demo.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert first.token_secret in state_file.read_text()
    assert first.admin_password not in state_file.read_text()
    # As if it had been stopped for two days: the rerun fills them in at the demo's rate.
    state = json.loads(state_file.read_text())
    stopped_at = datetime.fromisoformat(state["history_until"])
    state["history_until"] = (stopped_at - timedelta(days=2)).isoformat()
    state_file.write_text(json.dumps(state))

    # New ports: the routes follow the mock upstream to its new port.
    rerun = start_demo(demo.data_dir, tmp_path / "logs-rerun")
    try:
        assert rerun.banner.admin_password is None
        assert "password shown on the first run" in rerun.banner.text
        assert (rerun.banner.token_id, rerun.banner.token_secret) == (
            first.token_id,
            first.token_secret,
        )
        written = re.search(r"\((\d+) usage events written", rerun.banner.text)
        assert written, rerun.banner.text
        assert 3990 <= int(written.group(1)) <= 4100  # 60000 a month: 4000 in two days
        with sign_in(rerun, str(first.admin_password)) as rerun_admin:
            assert token_calls(rerun_admin, first.token_id) > calls_before
        client = OpenAI(
            base_url=f"{rerun.banner.gateway_url}/api/openai", api_key=first.token_secret
        )
        reply = client.chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "again"}]
        )
        assert reply.choices[0].message.content == "mock reply to: again"
    finally:
        assert rerun.stop() == 0

    reset = start_demo(demo.data_dir, tmp_path / "logs-reset", "--reset")
    try:
        assert reset.banner.admin_password is not None
        assert reset.banner.admin_password != first.admin_password
        assert reset.banner.token_secret != first.token_secret
        old = httpx.get(
            f"{reset.banner.gateway_url}/api/echo/x",
            headers={"X-API-Key": first.token_secret},
            timeout=30,
        )
        assert old.status_code == 401
    finally:
        assert reset.stop() == 0
    assert "Traceback" not in reset.stderr()


# -- refusals that need no running demo ----------------------------------------------------------


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        yield occupant


@pytest.mark.parametrize("option", ["--port", "--gateway-port", "--upstream-port"])
def test_an_occupied_port_is_refused_naming_it(
    tmp_path: Path, listening_socket: socket.socket, option: str
) -> None:
    busy = listening_socket.getsockname()[1]
    result = run_demo(tmp_path / "data", {**demo_ports(), option: busy})
    assert result.returncode == 5
    assert f"127.0.0.1:{busy}" in one_line(result.stderr)
    assert option in one_line(result.stderr)
    assert not (tmp_path / "data" / "tokenmanager.db").exists()  # refused before any setup


def test_the_same_port_twice_is_refused(tmp_path: Path) -> None:
    port = free_port()
    result = run_demo(
        tmp_path / "data", {"--port": port, "--gateway-port": port, "--upstream-port": free_port()}
    )
    assert result.returncode == 5
    assert "must differ" in one_line(result.stderr)


def test_a_data_dir_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_demo(blocker / "data", demo_ports())
    assert result.returncode == 5
    assert f"data dir {blocker / 'data'} is not writable" in one_line(result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_data_dir_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o500)
    try:
        result = run_demo(data_dir, demo_ports())
    finally:
        data_dir.chmod(0o700)
    assert result.returncode == 5
    assert "not writable" in one_line(result.stderr)


@pytest.mark.parametrize("extra", [(), ("--reset",)])
def test_a_database_the_demo_did_not_create_is_neither_used_nor_deleted(
    tmp_path: Path, sqlite_template: Path, extra: tuple[str, ...]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = data_dir / "tokenmanager.db"
    copy_sqlite_template(sqlite_template, database)
    before = database.read_bytes()
    result = run_demo(data_dir, demo_ports(), *extra)
    assert result.returncode == 4
    assert "did not create" in one_line(result.stderr)
    assert database.read_bytes() == before


def test_an_unfinished_setup_starts_over_and_ctrl_c_during_setup_exits_cleanly(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "demo.json").write_text(json.dumps({"status": "setting up"}))
    (data_dir / "tokenmanager.db").write_bytes(b"half a database")
    logs = tmp_path / "logs"
    arguments = [str(part) for pair in demo_ports().items() for part in pair]
    with (logs.parent / "setup.err").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tokenmanager", "demo", "--data-dir", str(data_dir),
             *arguments],
            env=demo_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip
    stderr_path = logs.parent / "setup.err"
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        # Interrupted while it sets up again: the old files are gone, the new database exists.
        database = data_dir / "tokenmanager.db"
        while not (
            "starting over" in stderr_path.read_text()
            and database.exists()
            and database.read_bytes()[:6] == b"SQLite"
        ):
            assert process.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=STOP_DEADLINE_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = one_line(stderr_path.read_text())
    assert "did not finish: starting over" in text
    assert "Stopped before the demo was ready" in text
    assert "Traceback" not in text
    assert (data_dir / "tokenmanager.db").read_bytes()[:16] == b"SQLite format 3\x00"
    assert json.loads((data_dir / "demo.json").read_text())["status"] == "setting up"
