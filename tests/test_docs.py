"""The reference docs cannot drift: every setting is in docs/configuration.md, and every CLI
command, argument and option is in its own section of docs/cli.md (and nothing stale is)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from tokenmanager.cli.main import app
from tokenmanager.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
# Variables that are not Settings fields but are documented with them.
EXTRA_VARIABLES = {"TOKENMANAGER_CONFIG", "TOKENMANAGER_TEST_POSTGRES_URL"}
# A command's section starts at a heading naming it, e.g. "### `tokenmanager token issue`".
COMMAND_HEADING = re.compile(r"^#{2,4} `tokenmanager(?P<path>(?: [a-z][a-z-]*)*)`$", re.MULTILINE)


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    # Typer may bundle its own copy of click, so groups are recognised by their `commands`.
    yield " ".join(("tokenmanager", *path)), command
    for name, subcommand in getattr(command, "commands", {}).items():
        yield from _walk(subcommand, (*path, name))


COMMANDS = dict(_walk(typer.main.get_command(app)))


def _cli_sections() -> dict[str, str]:
    text = (DOCS / "cli.md").read_text()
    headings = list(COMMAND_HEADING.finditer(text))
    ends = [match.start() for match in headings[1:]] + [len(text)]
    return {
        f"tokenmanager{match['path']}": text[match.end() : end]
        for match, end in zip(headings, ends, strict=True)
    }


def _documented_names(parameter: Any) -> list[str]:
    if parameter.param_type_name == "option":
        return [*parameter.opts, *parameter.secondary_opts]
    return [str(parameter.name).upper()]  # an argument, e.g. TOKEN_ID


@pytest.mark.parametrize("field_name", sorted(Settings.model_fields))
def test_every_setting_is_documented_in_configuration_md(field_name: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    assert f"`TOKENMANAGER_{field_name.upper()}`" in text


def test_configuration_md_mentions_no_setting_that_does_not_exist() -> None:
    text = (DOCS / "configuration.md").read_text()
    known = {f"TOKENMANAGER_{name.upper()}" for name in Settings.model_fields} | EXTRA_VARIABLES
    assert set(re.findall(r"TOKENMANAGER_[A-Z0-9_]+", text)) - known == set()


def test_configuration_md_documents_the_config_file_and_test_database() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert all(f"`{name}`" in text for name in EXTRA_VARIABLES)


@pytest.mark.parametrize("command_path", sorted(COMMANDS))
def test_every_cli_command_has_a_section_in_cli_md(command_path: str) -> None:
    assert command_path in _cli_sections(), f"add a '## `{command_path}`' section to docs/cli.md"


@pytest.mark.parametrize("command_path", sorted(COMMANDS))
def test_every_cli_argument_and_option_is_in_its_command_section(command_path: str) -> None:
    section = _cli_sections().get(command_path, "")
    missing = [
        name
        for parameter in COMMANDS[command_path].params
        for name in _documented_names(parameter)
        if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", section)
    ]
    assert missing == [], f"docs/cli.md, section `{command_path}`, does not mention {missing}"


def test_cli_md_has_no_section_for_a_command_that_does_not_exist() -> None:
    assert set(_cli_sections()) - set(COMMANDS) == set()


def test_cli_md_documents_every_exit_code() -> None:
    from tokenmanager.cli import output

    codes = {value for name, value in vars(output).items() if name.startswith("EXIT_")}
    table = (DOCS / "cli.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    assert {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)} == codes
