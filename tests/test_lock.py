"""requirements/lock.txt cannot drift from pyproject.toml: every dependency (runtime, test extra,
build backend) is pinned there, with hashes, at a version its range allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^ ;\\\n]+)", re.MULTILINE)


def _pins() -> dict[str, tuple[Version, str]]:
    """name -> (pinned version, the pin's entry: its line and the hash lines under it)."""
    text = (ROOT / "requirements" / "lock.txt").read_text()
    matches = list(PIN.finditer(text))
    ends = [match.start() for match in matches[1:]] + [len(text)]
    return {
        canonicalize_name(match["name"]): (Version(match["version"]), text[match.start() : end])
        for match, end in zip(matches, ends, strict=True)
    }


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["test"],
        *project["build-system"]["requires"],
    ]
    return [Requirement(line) for line in listed]


@pytest.mark.parametrize("requirement", _declared(), ids=str)
def test_lock_pins_every_declared_dependency_within_its_range(requirement: Requirement) -> None:
    pins = _pins()
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement.name} is not in requirements/lock.txt: run scripts/lock"
    version, entry = pins[name]
    assert requirement.specifier.contains(version, prereleases=True), (
        f"{requirement.name}=={version} is outside {requirement.specifier}: run scripts/lock"
    )
    assert "--hash=sha256:" in entry


def test_lock_gives_every_pin_a_hash() -> None:
    unhashed = [name for name, (_, entry) in _pins().items() if "--hash=sha256:" not in entry]
    assert unhashed == []
