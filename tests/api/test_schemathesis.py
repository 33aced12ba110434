"""schemathesis against the control plane's /openapi.json, signed in as an admin: every phase
(examples, coverage, fuzzing, stateful) and every check (server errors, schema and status-code
conformance, negative data rejected, use after free, …) over real HTTP on loopback. Zero
failures: an answer the document does not list fails the suite, not a client."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from tokenmanager.access.actor import Actor, Role
from tokenmanager.api.app import create_app
from tokenmanager.composition import Services
from tokenmanager.settings import Settings
from tokenmanager.testing import running_asgi_server

ADMIN_PASSWORD = "schemathesis admin 123"
# Bounded so the run takes about a minute here; CI may raise it with the variable.
MAX_EXAMPLES = int(os.environ.get("TOKENMANAGER_SCHEMATHESIS_MAX_EXAMPLES", "12"))
SEED = 20261206  # the same cases every run, so a failure reproduces
CONFIG = Path(__file__).with_name("schemathesis.toml")
# One backend keeps the run short: PostgreSQL when it is here (always in CI; its 32-bit ids and
# strict types are where a bad id could still reach the database), SQLite otherwise.
BACKEND = "postgres" if os.environ.get("TOKENMANAGER_TEST_POSTGRES_URL") else "sqlite"


async def _seed_objects(services: Services, admin: Actor) -> str:
    """Something for every operation to find: teams, a user, a token, a route, an ingest key
    (its secret returned, so that ingestion is exercised past its 401)."""
    await services.teams.create(admin, team_id="team-a", name="Team A")
    await services.teams.create(admin, team_id="team-b", name="Team B")
    await services.users.create(
        admin, username="fuzz-admin", password=ADMIN_PASSWORD, role=Role.ADMIN
    )
    await services.tokens.issue(admin, name="seeded", team_id="team-a", scopes=["openai:chat"])
    await services.routes.create(
        admin, path_prefix="/api/seeded", upstream_url="http://llm.upstream.test/v1"
    )
    created = await services.ingest_keys.create(admin, name="seeded")
    return created.key_secret


@pytest.mark.parametrize("backend", [BACKEND])
async def test_schemathesis_finds_no_failure(
    settings: Settings, services: Services, admin: Actor, tmp_path: Path
) -> None:
    ingest_key_secret = await _seed_objects(services, admin)
    async with running_asgi_server(create_app(settings, services)) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            answer = await client.post(
                "/api/auth/login", json={"username": "fuzz-admin", "password": ADMIN_PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            session_secret = answer.json()["access_token"]
        schemathesis = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(CONFIG),
            "run",
            f"{base_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {session_secret}",
            "--header",
            f"X-Ingest-Key: {ingest_key_secret}",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "too_slow",
            # Signing out would end the session every other operation runs in.
            "--exclude-path",
            "/api/auth/logout",
            "--report-dir",
            str(tmp_path / "schemathesis"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
            cwd=tmp_path,  # its cache directory stays out of the work tree
        )
        output, _ = await schemathesis.communicate()
    report = output.decode(errors="replace")
    assert schemathesis.returncode == 0, report
