"""`tokenmanager security …`: run the detectors, list and act on findings, manage alert
webhooks. Printing only; the work is done by the security services."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from tokenmanager.access.actor import cli_actor
from tokenmanager.cli.context import open_services, run_on_services
from tokenmanager.cli.output import (
    EXIT_INVALID,
    fail,
    print_json,
    print_record,
    print_table,
    run,
    stdout,
)
from tokenmanager.security.models import (
    DetectorKind,
    Finding,
    FindingStatus,
    RunResult,
    Severity,
)

app = typer.Typer(help="Security audit: detectors, findings and alerts.", no_args_is_help=True)
webhook_app = typer.Typer(help="Webhooks that receive security alerts.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
FindingArgument = Annotated[int, typer.Argument(help="Finding id.")]
WebhookArgument = Annotated[int, typer.Argument(help="Webhook id.")]


@app.command("run")
def run_detectors(
    since: Annotated[
        datetime | None,
        typer.Option(help="Read from here (ISO-8601, UTC if no zone) instead of the cursor."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the detectors now over every usage row not read yet (or every row since --since)."""
    start = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since

    async def body() -> list[RunResult]:
        async with open_services() as services:
            if start is not None:
                await services.security.monitor.start_at(start)
            return await services.security.monitor.run_until_caught_up()

    results = run(body)
    created = [i for r in results for i in r.created]
    summary = {
        "runs": len(results),
        "rows": sum(r.rows for r in results),
        "until": results[-1].slice_end,
        "new_findings": created,
        "updated_findings": sorted({i for r in results for i in r.updated}),
    }
    if as_json:
        print_json(summary)
        return
    print_record("Detector run", summary)


@app.command("findings")
def list_findings(
    status: Annotated[
        FindingStatus | None, typer.Option(help="open, acknowledged or resolved.")
    ] = None,
    kind: Annotated[
        DetectorKind | None, typer.Option(help="Only this detector's findings.")
    ] = None,
    min_severity: Annotated[
        Severity | None, typer.Option(help="low, medium, high or critical.")
    ] = None,
    token: Annotated[int | None, typer.Option(help="Only findings about this token id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many (newest first).")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List findings, most recently seen first."""
    findings, total = run_on_services(
        lambda services: services.security.findings.list(
            cli_actor(),
            status=status,
            kind=kind,
            min_severity=min_severity,
            token_id=token,
            limit=limit,
        )
    )
    if as_json:
        print_json({"findings": findings, "total": total})
        return
    print_table(
        f"{len(findings)} of {total} finding(s)",
        ("id", "kind", "severity", "status", "token", "route", "ip", "last seen", "seen"),
        (
            [f.id, f.kind, f.severity, f.status, f.token_id, f.route_path, f.ip_address,
             f.last_seen, f.occurrences]
            for f in findings
        ),
    )  # fmt: skip


def _show(finding: Finding, as_json: bool) -> None:
    if as_json:
        print_json(finding)
        return
    print_record(f"Finding {finding.id}", _finding_fields(finding))


def _finding_fields(finding: Finding) -> dict[str, Any]:
    return {
        "kind": finding.kind, "severity": finding.severity, "status": finding.status,
        "token": finding.token_id, "team": finding.team_id, "route": finding.route_path,
        "ip": finding.ip_address, "first seen": finding.first_seen,
        "last seen": finding.last_seen, "evidence": finding.evidence,
        "response": finding.response,
    }  # fmt: skip


@app.command("acknowledge")
def acknowledge(finding_id: FindingArgument, as_json: JsonOption = False) -> None:
    """Mark a finding as seen and being handled (audited)."""

    async def body() -> Finding:
        async with open_services() as services:
            return await services.security.findings.acknowledge(cli_actor(), finding_id)

    _show(run(body), as_json)


@app.command("resolve")
def resolve(finding_id: FindingArgument, as_json: JsonOption = False) -> None:
    """Close a finding (audited); the condition recurring opens a new one."""

    async def body() -> Finding:
        async with open_services() as services:
            return await services.security.findings.resolve(cli_actor(), finding_id)

    _show(run(body), as_json)


@app.command("reinstate")
def reinstate(finding_id: FindingArgument, as_json: JsonOption = False) -> None:
    """Undo the automatic suspension of the finding's token (audited)."""

    async def body() -> Finding:
        async with open_services() as services:
            return await services.security.findings.reinstate(cli_actor(), finding_id)

    _show(run(body), as_json)


@webhook_app.command("add")
def add_webhook(
    name: Annotated[str, typer.Argument(help="A name for the destination.")],
    url: Annotated[str, typer.Argument(help="Where alerts are posted (http or https).")],
    payload_format: Annotated[
        str, typer.Option("--format", help="json (generic) or slack (incoming webhook).")
    ] = "json",
    min_severity: Annotated[Severity, typer.Option(help="Lowest severity sent.")] = Severity.HIGH,
    cooldown_s: Annotated[
        int, typer.Option(min=0, max=7 * 86400, help="Do not repeat an alert within this time.")
    ] = 3600,
    secret_stdin: Annotated[
        bool, typer.Option("--secret-stdin", help="Read the signing secret from stdin.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Add a webhook; prints its signing secret once (generated unless --secret-stdin)."""
    secret = sys.stdin.readline().strip() if secret_stdin else None
    if secret_stdin and not secret:
        fail("--secret-stdin: no secret on standard input", EXIT_INVALID)

    created = run_on_services(
        lambda services: services.security.webhooks.create(
            cli_actor(),
            name=name,
            url=url,
            payload_format=payload_format,
            min_severity=min_severity,
            cooldown_s=cooldown_s,
            secret=secret,
        )
    )
    if as_json:
        print_json({**created.webhook, "secret": created.secret})
        return
    stdout.print(f"Added webhook {created.webhook['id']} ({created.webhook['name']}).")
    stdout.print("Signing secret (shown only now):", style="bold")
    print(created.secret)


@webhook_app.command("list")
def list_webhooks(as_json: JsonOption = False) -> None:
    """List webhooks (URLs shortened to their host; never the secrets)."""
    rows = run_on_services(lambda services: services.security.webhooks.list(cli_actor()))
    if as_json:
        print_json(rows)
        return
    print_table(
        f"{len(rows)} webhook(s)",
        ("id", "name", "url", "format", "min severity", "cool-down s"),
        ([r["id"], r["name"], r["url_display"], r["payload_format"], r["min_severity"],
          r["cooldown_s"]] for r in rows),
    )  # fmt: skip


@webhook_app.command("remove")
def remove_webhook(webhook_id: WebhookArgument) -> None:
    """Remove a webhook and its delivery history."""
    run_on_services(lambda services: services.security.webhooks.delete(cli_actor(), webhook_id))
    stdout.print(f"Removed webhook {webhook_id}.")


def _print_deliveries(deliveries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(deliveries)
        return
    print_table(
        f"{len(deliveries)} deliver(y/ies)",
        ("id", "event", "finding", "status", "attempts", "last answer", "next attempt"),
        (
            [d["id"], d["event"], d["finding_id"], d["status"], d["attempts"],
             _last_answer(d["attempt_log"]), d["next_attempt_at"]]
            for d in deliveries
        ),
    )  # fmt: skip


def _last_answer(attempts: list[dict[str, Any]]) -> str:
    if not attempts:
        return ""
    last = attempts[-1]
    return str(last["error"] or last["status_code"])


@webhook_app.command("test")
def send_test_alert(webhook_id: WebhookArgument, as_json: JsonOption = False) -> None:
    """Send a signed test alert now and show how it went."""
    delivery = run_on_services(
        lambda services: services.security.webhooks.send_test(cli_actor(), webhook_id)
    )
    _print_deliveries([delivery], as_json)
    if delivery["status"] != "delivered":
        raise typer.Exit(1)


@webhook_app.command("deliveries")
def list_deliveries(
    webhook_id: WebhookArgument,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many (newest first).")] = 20,
    as_json: JsonOption = False,
) -> None:
    """A webhook's recent deliveries and their attempts."""

    async def body() -> list[dict[str, Any]]:
        async with open_services() as services:
            return await services.security.webhooks.deliveries(cli_actor(), webhook_id, limit)

    _print_deliveries(run(body), as_json)
