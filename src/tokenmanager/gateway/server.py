"""Running the gateway: the uvicorn factory its worker processes import, and the settings the
server uses for every process."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from tokenmanager.composition import build_gateway_app
from tokenmanager.gateway.app import GatewayApp
from tokenmanager.gateway.usage_writer import UsageWriterProcess
from tokenmanager.settings import load_settings

GRACEFUL_SHUTDOWN_S = 30


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
