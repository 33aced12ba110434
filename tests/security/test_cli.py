"""`tokenmanager security …` as scripts use it: real subprocesses on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from cli.conftest import Cli, cli_environment
from tokenmanager.clock import utcnow
from tokenmanager.composition import Services
from tokenmanager.security.evaluation import store_events
from tokenmanager.security.webhooks import SIGNATURE_HEADER, verify_signature

from .conftest import Receiver, all_findings, refused_call

SECRET = "cli signing secret, long enough"


async def test_run_list_acknowledge_and_resolve_findings(
    services: Services, tmp_path: Path, database_url: str
) -> None:
    cli = Cli(cli_environment(tmp_path, database_url))
    now = utcnow()
    await store_events(
        services.database, [refused_call(None, now - timedelta(seconds=95 - i)) for i in range(25)]
    )

    ran = await asyncio.to_thread(cli.json, "security", "run")
    [finding_id] = ran["new_findings"]
    assert ran["rows"] == 25
    listed = await asyncio.to_thread(cli.json, "security", "findings", "--status", "open")
    assert [(f["id"], f["kind"], f["ip_address"]) for f in listed["findings"]] == [
        (finding_id, "auth_failure_burst", "185.220.101.7")
    ]
    acknowledged = await asyncio.to_thread(cli.json, "security", "acknowledge", str(finding_id))
    assert acknowledged["status"] == "acknowledged"
    resolved = await asyncio.to_thread(cli.json, "security", "resolve", str(finding_id))
    assert resolved["status"] == "resolved"

    reopen = await asyncio.to_thread(cli, "security", "acknowledge", str(finding_id))
    assert reopen.returncode == 4, reopen.stderr
    missing = await asyncio.to_thread(cli, "security", "resolve", "999")
    assert missing.returncode == 3
    bad = await asyncio.to_thread(cli, "security", "findings", "--status", "closed")
    assert bad.returncode == 2
    nothing_new = await asyncio.to_thread(cli.json, "security", "run")
    assert nothing_new["new_findings"] == []

    # Rows older than the cursor are read again only when asked to.
    old = [refused_call(None, now - timedelta(hours=3, seconds=i), ip_address="192.0.2.66")
           for i in range(25)]  # fmt: skip
    await store_events(services.database, old)
    since = (now - timedelta(hours=4)).isoformat()
    rescan = await asyncio.to_thread(cli.json, "security", "run", "--since", since)
    assert rescan["rows"] >= 50
    reopened = {f.ip_address for f in await all_findings(services) if f.status == "open"}
    assert reopened == {"192.0.2.66", "185.220.101.7"}  # the resolved burst is seen anew
    assert len(rescan["new_findings"]) == 2


async def test_webhook_add_test_and_deliveries(
    tmp_path: Path, database_url: str, receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver
    cli = Cli(cli_environment(tmp_path, database_url))
    allowed = {"TOKENMANAGER_UPSTREAM_ALLOW": "127.0.0.1"}

    added = await asyncio.to_thread(
        cli, "security", "webhook", "add", "soc", url, "--format", "slack", "--secret-stdin",
        "--json", stdin=SECRET + "\n", env=allowed,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    webhook = json.loads(added.stdout)
    assert webhook["secret"] == SECRET
    tested = await asyncio.to_thread(
        cli, "security", "webhook", "test", str(webhook["id"]), "--json", env=allowed
    )
    assert tested.returncode == 0, tested.stderr
    [(headers, body)] = app.requests
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER.lower()], body)

    listed = await asyncio.to_thread(cli, "security", "webhook", "list")
    assert "soc" in listed.stdout
    assert SECRET not in listed.stdout
    assert "/hooks/security" not in listed.stdout
    deliveries = await asyncio.to_thread(
        cli.json, "security", "webhook", "deliveries", str(webhook["id"])
    )
    assert [(d["event"], d["status"]) for d in deliveries] == [("test", "delivered")]

    refused = await asyncio.to_thread(
        cli, "security", "webhook", "add", "meta", "http://169.254.169.254/latest"
    )
    assert refused.returncode == 2
    assert "169.254.169.254" in refused.stderr
    removed = await asyncio.to_thread(cli, "security", "webhook", "remove", str(webhook["id"]))
    assert removed.returncode == 0
