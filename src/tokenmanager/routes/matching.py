"""Route matching and path-prefix rules. Pure functions.

A prefix matches a path when the path equals it or continues it at a `/` boundary, so `/api/echo`
matches `/api/echo` and `/api/echo/a` but not `/api/echoes`. The longest matching prefix wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar

_PREFIX_PATTERN = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$|^/$")

RouteT = TypeVar("RouteT")


def parse_path_prefix(raw: str) -> str:
    """The normalised prefix (no trailing slash); ValueError if it is not a clean path."""
    prefix = raw.strip()
    if len(prefix) > 1:
        prefix = prefix.rstrip("/")
    if not prefix.startswith("/"):
        raise ValueError("must start with /")
    if len(prefix) > 255:
        raise ValueError("must be at most 255 characters")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise ValueError("must not contain empty, '.' or '..' segments")
    if not _PREFIX_PATTERN.match(prefix):
        raise ValueError("may contain only URL path characters (no spaces, ?, # or \\)")
    return prefix


def prefix_matches(prefix: str, path: str) -> bool:
    if prefix == "/":
        return path.startswith("/")
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/")


def match_route(routes: Iterable[tuple[str, RouteT]], path: str) -> tuple[str, RouteT] | None:
    """The (prefix, route) with the longest prefix matching `path`, or None."""
    best: tuple[str, RouteT] | None = None
    for prefix, route in routes:
        if prefix_matches(prefix, path) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, route)
    return best
