"""Scope strings and matching. A scope is `name` or `name:action` of lower-case letters, digits,
`_ . -`; a granted scope may end in `:*` (every action of a name) or be `*` (everything).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_SCOPES = 64
_SCOPE_PATTERN = re.compile(r"\*|[a-z0-9][a-z0-9_.\-]{0,63}(:[a-z0-9][a-z0-9_.\-]{0,63})*(:\*)?")


def parse_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated, sorted scopes; ValueError naming the first bad one."""
    result = set()
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE_PATTERN.fullmatch(scope):
            raise ValueError(
                f"invalid scope {scope!r}: use lower-case name or name:action, optionally ending "
                "in :* (or * alone)"
            )
        result.add(scope)
    if len(result) > MAX_SCOPES:
        raise ValueError(f"at most {MAX_SCOPES} scopes")
    return tuple(sorted(result))


def grants(granted: str, required: str) -> bool:
    """Whether one granted scope covers one required scope."""
    if granted == "*" or granted == required:
        return True
    if granted.endswith(":*"):
        return required.startswith(granted[:-1]) or required == granted[:-2]
    return False


def has_scopes(granted: Iterable[str], required: Iterable[str]) -> bool:
    """True if every required scope is covered by some granted scope."""
    granted = tuple(granted)
    return all(any(grants(g, r) for g in granted) for r in required)
