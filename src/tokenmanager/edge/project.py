"""Edge project files: the operator's project from `edge init` (wrangler.toml, the Worker's
source, the pinned package.json and lockfile) and the configuration `edge dev` runs locally."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenmanager.errors import ConfigurationError

COMPATIBILITY_DATE = "2026-04-01"
QUEUE_NAME = "tokenmanager-usage"
DEAD_LETTER_QUEUE_NAME = "tokenmanager-usage-dlq"
# Cloudflare's ceiling; with QUEUE_RETRY_DELAY_S = 2 in the Worker a batch survives a
# control-plane outage of a few minutes, then goes to the dead-letter queue (never dropped).
QUEUE_MAX_RETRIES = 100
PROJECT_FILES = ("package.json", "package-lock.json")


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def build_wrangler_toml(
    *,
    name: str,
    main: str,
    control_plane_url: str,
    kv_namespace_id: str,
    use_queue: bool,
    extra_vars: dict[str, str] | None = None,
) -> str:
    """A wrangler.toml for the edge Worker. Secrets (EDGE_KEY, INGEST_KEY) are never in it."""
    lines = [
        "# Token Manager's edge gateway (tokenmanager edge init). Secrets are set with",
        "# `wrangler secret put EDGE_KEY` and `wrangler secret put INGEST_KEY`, never here.",
        f"name = {_toml_string(name)}",
        f"main = {_toml_string(main)}",
        f'compatibility_date = "{COMPATIBILITY_DATE}"',
        "send_metrics = false",
        "",
        "# Tokens and routes, written by `tokenmanager edge sync`.",
        "[[kv_namespaces]]",
        'binding = "TOKENS"',
        f"id = {_toml_string(kv_namespace_id)}",
        "",
    ]
    if use_queue:
        lines += [
            "# Usage events: the Worker is producer and consumer; a failed post is retried and",
            "# ends in the dead-letter queue after max_retries, never silently dropped.",
            "[[queues.producers]]",
            'binding = "USAGE_QUEUE"',
            f'queue = "{QUEUE_NAME}"',
            "",
            "[[queues.consumers]]",
            f'queue = "{QUEUE_NAME}"',
            "max_batch_size = 100",
            "max_batch_timeout = 1",
            f"max_retries = {QUEUE_MAX_RETRIES}",
            f'dead_letter_queue = "{DEAD_LETTER_QUEUE_NAME}"',
            "",
        ]
    lines += ["[vars]", f"CONTROL_PLANE_URL = {_toml_string(control_plane_url)}"]
    for key, value in (extra_vars or {}).items():
        lines.append(f"{key} = {_toml_string(value)}")
    return "\n".join(lines) + "\n"


def write_project(
    source: Path, target: Path, *, control_plane_url: str, kv_namespace_id: str, use_queue: bool
) -> list[Path]:
    """Copy the Worker into `target` and write its wrangler.toml; refuses to overwrite one."""
    config = target / "wrangler.toml"
    if config.exists():
        raise ConfigurationError(f"{config} exists; remove it or choose another directory")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    shutil.copytree(source / "src", target / "src", dirs_exist_ok=True)
    written.append(target / "src")
    for name in PROJECT_FILES:
        shutil.copy2(source / name, target / name)
        written.append(target / name)
    (target / ".gitignore").write_text("node_modules/\n.wrangler/\n.dev.vars\n.config/\n")
    config.write_text(
        build_wrangler_toml(
            name="tokenmanager-edge",
            main="src/index.js",
            control_plane_url=control_plane_url,
            kv_namespace_id=kv_namespace_id,
            use_queue=use_queue,
        )
    )
    written.append(config)
    return written
