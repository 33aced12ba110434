"""Running the gateway: the uvicorn factory its worker processes import, and the settings the
server uses for every process."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from tokenmanager.composition import build_gateway_app
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.gateway.usage_writer import UsageWriterProcess
from tokenmanager.settings import load_settings

GRACEFUL_SHUTDOWN_S = 30
# Descriptors besides client connections: the database, Redis, the spool, logs, the listener.
BASE_FILE_DESCRIPTORS = 200

logger = logging.getLogger(__name__)


def create_gateway_from_environment() -> GatewayApp:
    """uvicorn factory (`--factory`): each worker builds its own app from the environment."""
    settings = load_settings()
    # A server process serves this app alone: its usage writes can move to a child process,
    # and its startup objects can be frozen out of the garbage collector's walks.
    app = build_gateway_app(
        settings, usage_writer=UsageWriterProcess(settings.resolved_database_url, settings.timezone)
    )
    app.freeze_gc_after_startup = True
    return app


@contextmanager
def multiprocess_metrics_dir() -> Iterator[str]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers of one gateway run."""
    directory = tempfile.mkdtemp(prefix="tokenmanager-metrics-")
    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
        shutil.rmtree(directory, ignore_errors=True)


def raise_open_file_limit(max_connections: int) -> int:
    """Raise this process's open-file soft limit to its hard limit (children inherit it) and
    return it; log one line naming what to change if it is below what `max_connections`
    client connections need (each may hold an upstream connection too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have; the check below says what to change
    needed = 2 * max_connections + BASE_FILE_DESCRIPTORS
    if soft < needed:
        logger.warning(
            "the open-file limit is %d, but TOKENMANAGER_GATEWAY_MAX_CONNECTIONS=%d needs about "
            "%d: raise the hard limit (ulimit -Hn %d, or LimitNOFILE=%d in a systemd unit) or "
            "lower TOKENMANAGER_GATEWAY_MAX_CONNECTIONS (past it, new connections wait unaccepted)",
            soft, max_connections, needed, needed, needed,
        )  # fmt: skip
    return soft
