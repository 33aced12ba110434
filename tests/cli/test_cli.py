"""The `tokenmanager` command as scripts use it: real subprocesses on SQLite and PostgreSQL,
checking output, `--json` shapes, secrets printed once, and the documented exit codes.

Objects a test only needs to exist are made in-process through the services; every behaviour
under test goes through the command.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tokenmanager.access.actor import Actor
from tokenmanager.composition import Services
from tokenmanager.storage.migrate import head_revision
from tokenmanager.tokens.models import IssuedToken

from .conftest import Cli, cli_environment, message

TOKEN_SECRET = r"ntk_[0-9A-Za-z]{49}"
TEAM = "backend-team"
UPSTREAM_CREDENTIAL = "Bearer sk-test-do-not-print-0123456789-WXYZ"
PASSWORD = "correct horse battery staple"


@pytest.fixture
async def team(services: Services, admin: Actor) -> str:
    await services.teams.create(admin, team_id=TEAM, name="Backend")
    return TEAM


@pytest.fixture
async def issued(services: Services, admin: Actor, team: str) -> IssuedToken:
    return await services.tokens.issue(admin, name="n8n prod", team_id=team, scopes=["read"])


def secret_lines(output: str) -> list[str]:
    return re.findall(rf"^{TOKEN_SECRET}$", output, re.MULTILINE)


# Schema


def test_migrate_upgrades_an_empty_database_and_is_idempotent(cli_on_empty_database: Cli) -> None:
    first = cli_on_empty_database("migrate")
    assert first.returncode == 0, first.stderr
    assert f"at revision {head_revision()} (was empty)" in first.stdout

    again = cli_on_empty_database("migrate")
    assert again.returncode == 0, again.stderr
    assert f"(was {head_revision()})" in again.stdout
    assert cli_on_empty_database.json("team", "list") == []


def test_command_on_unmigrated_database_exits_5_naming_migrate(cli_on_empty_database: Cli) -> None:
    result = cli_on_empty_database("team", "list")
    assert result.returncode == 5
    assert "run `tokenmanager migrate`" in message(result)


# Teams


def test_team_create_list_show_update_delete(cli: Cli) -> None:
    created = cli.json("team", "create", TEAM, "--name", "Backend", "--description", "APIs")
    assert (created["id"], created["name"], created["description"]) == (TEAM, "Backend", "APIs")

    listed = cli("team", "list")
    assert listed.returncode == 0, listed.stderr
    assert TEAM in listed.stdout
    assert "Backend" in listed.stdout

    updated = cli.json("team", "update", TEAM, "--name", "Backend platform")
    assert updated["name"] == "Backend platform"
    shown = cli.json("team", "show", TEAM)
    assert (shown["name"], shown["description"]) == ("Backend platform", "APIs")

    deleted = cli("team", "delete", TEAM)
    assert deleted.returncode == 0, deleted.stderr
    assert cli("team", "show", TEAM).returncode == 3


# Tokens


def test_token_issue_prints_the_secret_once_and_json_carries_it_as_token(
    cli: Cli, team: str
) -> None:
    plain = cli("token", "issue", "--name", "n8n prod", "--team", team, "-s", "openai:chat")
    assert plain.returncode == 0, plain.stderr
    [plain_secret] = secret_lines(plain.stdout)

    as_json = cli.json("token", "issue", "--name", "ci", "--team", team, "--expires-at", "30d")
    assert re.fullmatch(TOKEN_SECRET, as_json["token"])
    assert (as_json["state"], as_json["team_id"]) == ("active", team)
    assert as_json["expires_at"] is not None

    listed = cli("token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    for secret in (plain_secret, as_json["token"]):
        assert secret not in listed.stdout
    assert "token_hash" not in listed.stdout


async def test_token_list_filters_by_team_and_state(
    cli: Cli, services: Services, admin: Actor
) -> None:
    for team_id in ("team-a", "team-b"):
        await services.teams.create(admin, team_id=team_id, name=team_id)
    await services.tokens.issue(admin, name="a-active", team_id="team-a")
    revoked = await services.tokens.issue(admin, name="a-revoked", team_id="team-a")
    await services.tokens.revoke(admin, revoked.token.id)
    await services.tokens.issue(admin, name="b-active", team_id="team-b")

    def names(*filters: str) -> set[str]:
        return {token["name"] for token in cli.json("token", "list", *filters)}

    assert names("--team", "team-a") == {"a-active", "a-revoked"}
    assert names("--state", "revoked") == {"a-revoked"}
    assert names("--team", "team-b", "--state", "active") == {"b-active"}


def test_token_show_update_and_revoke(cli: Cli, issued: IssuedToken) -> None:
    token_id = str(issued.token.id)
    shown = cli.json("token", "show", token_id)
    assert (shown["name"], shown["scopes"], shown["state"]) == ("n8n prod", ["read"], "active")

    updated = cli.json(
        "token", "update", token_id, "--name", "renamed", "-s", "a", "-s", "b",
        "--expires-at", "2099-01-01T00:00:00Z",
    )  # fmt: skip
    assert (updated["name"], updated["scopes"]) == ("renamed", ["a", "b"])
    assert updated["expires_at"].startswith("2099-01-01T00:00:00")

    revoked = cli.json("token", "revoke", token_id)
    assert revoked["state"] == "revoked"
    assert revoked["revoked_at"] is not None


def test_token_rotate_prints_a_new_secret(cli: Cli, issued: IssuedToken) -> None:
    token_id = str(issued.token.id)
    rotated = cli.json("token", "rotate", token_id)
    assert re.fullmatch(TOKEN_SECRET, rotated["token"])
    assert rotated["token"] != issued.token_secret
    assert rotated["token"].startswith(rotated["display_prefix"])

    again = cli("token", "rotate", token_id, "--grace-period-s", "0")
    assert again.returncode == 0, again.stderr
    [new_secret] = secret_lines(again.stdout)
    assert new_secret not in (issued.token_secret, rotated["token"])


def test_token_delete_needs_yes_without_a_terminal(cli: Cli, issued: IssuedToken) -> None:
    token_id = str(issued.token.id)
    refused = cli("token", "delete", token_id)
    assert refused.returncode == 2
    assert "--yes" in message(refused)
    assert cli("token", "show", token_id).returncode == 0

    deleted = cli("token", "delete", token_id, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert cli("token", "show", token_id).returncode == 3


def test_token_import_takes_a_sha256_hex_hash_and_refuses_anything_else(
    cli: Cli, team: str
) -> None:
    token_hash = hashlib.sha256(b"a secret of the original design").hexdigest()
    imported = cli.json(
        "token", "import", "--token-hash", token_hash, "--name", "legacy", "--team", team
    )
    assert (imported["name"], imported["is_imported"], imported["state"]) == (
        "legacy",
        True,
        "active",
    )
    assert "token" not in imported
    assert token_hash not in str(imported)

    bad = cli("token", "import", "--token-hash", "abc123", "--name", "legacy", "--team", team)
    assert bad.returncode == 2
    assert "token_hash" in message(bad)


def test_showing_an_unknown_token_exits_3(cli: Cli) -> None:
    result = cli("token", "show", "999999")
    assert result.returncode == 3
    assert "not found" in message(result)


# Routes


def test_route_add_reads_the_credential_from_stdin_and_never_prints_it(cli: Cli) -> None:
    added = cli(
        "route", "add", "/api/openai", "https://upstream.example/v1", "-s", "openai:chat",
        "--auth-header", "Authorization", "--auth-value-stdin", "--json",
        stdin=UPSTREAM_CREDENTIAL + "\n",
    )  # fmt: skip
    listed = cli("route", "list")
    shown = cli("route", "show", "1", "--json")

    for result in (added, listed, shown):
        assert result.returncode == 0, result.stderr
        assert "do-not-print" not in result.stdout + result.stderr
    assert "WXYZ" in listed.stdout
    assert '"upstream_auth_value_set": true' in shown.stdout
    assert '"upstream_auth_value_last4": "…WXYZ"' in shown.stdout
    assert '"upstream_auth_header": "Authorization"' in added.stdout


async def test_route_update_and_remove(cli: Cli, services: Services, admin: Actor) -> None:
    route = await services.routes.create(
        admin, path_prefix="/api/old", upstream_url="https://upstream.example/v1"
    )
    route_id = str(route.id)

    updated = cli.json(
        "route", "update", route_id, "--path-prefix", "/api/new",
        "--upstream-url", "https://other.example/v2", "-s", "x", "--disabled",
    )  # fmt: skip
    assert (updated["path_prefix"], updated["upstream_url"]) == (
        "/api/new",
        "https://other.example/v2",
    )
    assert (updated["required_scopes"], updated["is_enabled"]) == (["x"], False)

    assert cli("route", "remove", route_id).returncode == 2
    removed = cli("route", "remove", route_id, "--yes")
    assert removed.returncode == 0, removed.stderr
    assert cli("route", "show", route_id).returncode == 3


# Users


def test_user_create_list_update_delete_with_password_from_stdin(cli: Cli, team: str) -> None:
    admin = cli("user", "create", "alice", "--role", "admin", "--password-stdin", stdin=PASSWORD)
    assert admin.returncode == 0, admin.stderr
    viewer = cli.json(
        "user", "create", "victor", "--role", "viewer", "-t", team, "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert (viewer["role"], viewer["team_ids"]) == ("viewer", [team])
    assert not {"password", "password_hash"} & set(viewer)

    listed = cli("user", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"alice", "victor"} <= set(re.findall(r'"username": "(\w+)"', listed.stdout))
    assert "argon2" not in listed.stdout

    member = cli.json(
        "user", "create", "mona", "--role", "member", "-t", team, "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert (member["role"], member["team_ids"]) == ("member", [team])

    promoted = cli.json("user", "update", "victor", "--role", "admin")
    assert promoted["role"] == "admin"
    deleted = cli("user", "delete", "victor")
    assert deleted.returncode == 0, deleted.stderr


def test_user_create_refuses_a_missing_or_short_password_with_exit_2(cli: Cli) -> None:
    no_terminal = cli("user", "create", "bob", "--role", "admin")
    assert no_terminal.returncode == 2
    assert "--password-stdin" in message(no_terminal)

    short = cli("user", "create", "bob", "--role", "admin", "--password-stdin", stdin="short\n")
    assert short.returncode == 2
    assert "password" in message(short)


# Ingest keys


def test_ingest_key_create_list_delete(cli: Cli) -> None:
    created = cli.json("ingest-key", "create", "edge-gateway")
    assert created["name"] == "edge-gateway"
    assert created["key"].startswith(created["display_prefix"])

    listed = cli("ingest-key", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert created["display_prefix"] in listed.stdout
    assert created["key"] not in listed.stdout

    key_id = str(created["id"])
    assert cli("ingest-key", "delete", key_id).returncode == 0
    assert cli("ingest-key", "delete", key_id).returncode == 3


# Errors


def test_conflicts_exit_4_for_a_duplicate_team_and_a_team_that_owns_tokens(
    cli: Cli, issued: IssuedToken
) -> None:
    duplicate = cli("team", "create", issued.token.team_id, "--name", "Again")
    assert duplicate.returncode == 4
    assert "already exists" in message(duplicate)

    still_owns = cli("team", "delete", issued.token.team_id)
    assert still_owns.returncode == 4
    assert "token" in message(still_owns)


def test_placeholder_secret_key_exits_5_naming_the_setting(tmp_path: Path) -> None:
    cli = Cli(cli_environment(tmp_path))
    result = cli("team", "list", env={"TOKENMANAGER_SECRET_KEY": "changeme"})
    assert result.returncode == 5
    assert "TOKENMANAGER_SECRET_KEY" in message(result)
    assert "placeholder" in message(result)
    assert "Traceback" not in result.stderr


def test_unreachable_database_exits_5_without_a_traceback(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    cli = Cli(cli_environment(tmp_path, "postgresql://tm@127.0.0.1:1/tm"))
    result = cli("team", "list")
    assert result.returncode == 5
    assert "cannot reach the database" in message(result)
    assert "Traceback" not in result.stderr
