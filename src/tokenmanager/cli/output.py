"""How the CLI talks back: Rich tables for people, `--json` for scripts, and exit codes that
scripts can trust (documented in docs/cli.md):

    0 ok · 1 unexpected error · 2 invalid input or usage · 3 not found · 4 conflict ·
    5 configuration or schema problem · 6 permission denied
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from tokenmanager.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    SchemaNotReadyError,
    TokenManagerError,
)

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_CONFIG = 5
EXIT_PERMISSION = 6

_EXIT_CODES: tuple[tuple[type[TokenManagerError], int], ...] = (
    (InvalidInputError, EXIT_INVALID),
    (NotFoundError, EXIT_NOT_FOUND),
    (ConflictError, EXIT_CONFLICT),
    (ConfigurationError, EXIT_CONFIG),
    (SchemaNotReadyError, EXIT_CONFIG),
    (PermissionDeniedError, EXIT_PERMISSION),
)

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)  # a message is one line, whatever the width
T = TypeVar("T")


def fail(message: str, exit_code: int) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(exit_code)


def exit_code_for(exc: TokenManagerError) -> int:
    return next((code for cls, code in _EXIT_CODES if isinstance(exc, cls)), EXIT_UNEXPECTED)


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


def format_cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(format_cell(cell) for cell in row))
    stdout.print(table)


def print_record(title: str, fields: dict[str, Any]) -> None:
    print_table(title, ("field", "value"), fields.items())


def run(coroutine_function: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async command body, turning product errors into a message and an exit code."""
    import asyncio

    try:
        return asyncio.run(coroutine_function())
    except TokenManagerError as exc:
        fail(exc.message, exit_code_for(exc))
    except OSError as exc:  # e.g. PostgreSQL refusing the connection: a setting to fix, not a bug
        fail(f"cannot reach the database: {exc}", EXIT_CONFIG)
