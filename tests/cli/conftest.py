"""The real `tokenmanager` command, run as a subprocess against the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tokenmanager.testing import TEST_SECRET_KEY, PostgresDatabases

CLI_TIMEOUT_S = 60


def message(result: subprocess.CompletedProcess[str]) -> str:
    """Standard error with Rich's line wrapping undone."""
    return " ".join(result.stderr.split())


@dataclass(frozen=True)
class Cli:
    env: dict[str, str]

    def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `tokenmanager ARGS`; standard input is closed (not a terminal) unless given."""
        return subprocess.run(
            [sys.executable, "-m", "tokenmanager", *args],
            env={**self.env, **(env or {})},
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    def json(self, *args: str, stdin: str | None = None) -> Any:
        """Run `tokenmanager ARGS --json`, which must succeed, and parse what it prints."""
        result = self(*args, "--json", stdin=stdin)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def cli_environment(data_dir: Path, database_url: str | None = None) -> dict[str, str]:
    # Nothing from the machine's own TOKENMANAGER_* settings may reach the command.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMANAGER_")}
    env.update(
        TOKENMANAGER_DATA_DIR=str(data_dir),
        TOKENMANAGER_SECRET_KEY=TEST_SECRET_KEY,
        TOKENMANAGER_ARGON2_TIME_COST="1",
        TOKENMANAGER_ARGON2_MEMORY_KIB="64",
        COLUMNS="200",  # tables unwrapped, so a cell can be found in the output
        NO_COLOR="1",
    )
    if database_url is not None:
        env["TOKENMANAGER_DATABASE_URL"] = database_url
    return env


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    """The CLI on a migrated, empty database of the current backend."""
    return Cli(cli_environment(tmp_path, database_url))


@pytest.fixture
async def empty_database_url(
    backend: str, tmp_path: Path, postgres_databases: PostgresDatabases | None
) -> AsyncIterator[str]:
    """A database of the current backend that has never been migrated."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    assert postgres_databases is not None
    url = await postgres_databases.create_database(migrated=False)
    yield url
    await postgres_databases.drop_database(url)


@pytest.fixture
def cli_on_empty_database(tmp_path: Path, empty_database_url: str) -> Cli:
    return Cli(cli_environment(tmp_path, empty_database_url))
