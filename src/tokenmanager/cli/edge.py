"""`tokenmanager edge …`: the Cloudflare Worker gateway's project (`init`), its KV (`sync`)
and a local run on the Workers runtime (`dev`)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from tokenmanager.access.actor import cli_actor
from tokenmanager.cli.context import open_services
from tokenmanager.cli.output import run, stdout
from tokenmanager.errors import ConfigurationError

app = typer.Typer(
    help="The edge gateway: a Cloudflare Worker fed by the control plane through Workers KV.",
    no_args_is_help=True,
)

ProjectOption = Annotated[
    Path,
    typer.Option(
        "--project", help="The edge project (from `edge init`) whose wrangler.toml binds TOKENS."
    ),
]


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the Worker project.")],
    control_plane: Annotated[
        str,
        typer.Option("--control-plane", help="The control plane's URL the Worker posts usage to."),
    ] = "http://127.0.0.1:8000",
    kv_namespace_id: Annotated[
        str,
        typer.Option(
            "--kv-namespace-id", help="The Workers KV namespace id (wrangler kv namespace create)."
        ),
    ] = "REPLACE_WITH_YOUR_KV_NAMESPACE_ID",
    use_queue: Annotated[
        bool,
        typer.Option(
            "--queue/--no-queue",
            help="Post usage through a Cloudflare Queue (durable) or waitUntil.",
        ),
    ] = True,
    new_key: Annotated[
        bool,
        typer.Option("--new-key", help="Replace an existing edge key (then sync with --full)."),
    ] = False,
) -> None:
    """Write wrangler.toml and the Worker into DIRECTORY; create the edge key and an ingest key."""
    from tokenmanager.edge.project import write_project
    from tokenmanager.edge.sync import create_edge_key, edge_key_path
    from tokenmanager.edge.wrangler import source_project

    async def body() -> tuple[str | None, str, Path]:
        async with open_services() as services:
            write_project(
                source_project(),
                directory,
                control_plane_url=control_plane,
                kv_namespace_id=kv_namespace_id,
                use_queue=use_queue,
            )
            edge_key = create_edge_key(services.settings, replace=new_key)
            created = await services.ingest_keys.create(cli_actor(), name=f"edge {directory.name}")
            return edge_key, created.key_secret, edge_key_path(services.settings)

    edge_key, ingest_key, key_path = run(body)
    stdout.print(f"Wrote the edge Worker project to {directory}.")
    if edge_key is None:
        stdout.print(
            f"Kept the existing edge key ({key_path}); set it as EDGE_KEY if not yet done."
        )
    else:
        stdout.print(f"Edge key (kept 0600 in {key_path}; shown only now):", style="bold")
        print(edge_key)
    stdout.print("Ingest key for the Worker's usage posts (shown only now):", style="bold")
    print(ingest_key)
    stdout.print(
        f"Next: cd {directory} && npm ci && node_modules/.bin/wrangler secret put EDGE_KEY "
        "&& node_modules/.bin/wrangler secret put INGEST_KEY (paste each key when asked); "
        f"then tokenmanager edge sync --project {directory} and wrangler deploy (docs/edge.md)."
    )


@app.command("sync")
def sync(
    project: ProjectOption = Path(),
    local: Annotated[
        Path | None,
        typer.Option(
            "--local", help="Write a local Miniflare store in this directory instead of Cloudflare."
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Write every token and route, not only the changes.")
    ] = False,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="Keep running: sync every change as it is recorded."),
    ] = False,
    interval_s: Annotated[
        float,
        typer.Option("--interval-s", min=0.1, help="With --watch: seconds between change checks."),
    ] = 1.0,
) -> None:
    """Push tokens and routes to the Worker's KV (remote needs CLOUDFLARE_API_TOKEN)."""
    import asyncio
    import signal

    from tokenmanager.edge.dev import sync_state_path
    from tokenmanager.edge.sync import EdgeSync, KvTarget, load_edge_key, sync_forever
    from tokenmanager.edge.wrangler import source_project

    async def body() -> str:
        async with open_services() as services:
            config = project / "wrangler.toml"
            if not config.is_file():
                raise ConfigurationError(
                    f"{config} not found: run `tokenmanager edge init DIR` first"
                )
            npm_project = project if (project / "node_modules").is_dir() else source_project()
            target = KvTarget(
                project=npm_project,
                config=config,
                persist_dir=local,
                state_path=sync_state_path(services.settings.data_dir, config, local),
            )
            syncer = EdgeSync(
                services.database, services.keyring, load_edge_key(services.settings), target
            )
            result = await syncer.sync(full=full)
            kind = "full snapshot" if result.is_full else "changes"
            summary = (
                f"Synced {kind} up to change {result.change_id}: "
                f"{result.written} key(s) written, {result.deleted} deleted."
            )
            if not watch:
                return summary
            stdout.print(summary + " Watching for changes (SIGTERM or Ctrl-C stops).")
            stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stopping.set)
            watcher = asyncio.create_task(sync_forever(syncer, interval_s))
            await stopping.wait()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            return "Stopped watching."

    stdout.print(run(body))


@app.command("dev")
def dev(
    port: Annotated[
        int, typer.Option("--port", help="Port for the local Worker on 127.0.0.1.")
    ] = 8788,
    control_plane: Annotated[
        str,
        typer.Option("--control-plane", help="The control plane's URL the Worker posts usage to."),
    ] = "http://127.0.0.1:8000",
    use_queue: Annotated[
        bool,
        typer.Option(
            "--queue/--no-queue", help="Post usage through a local Queue (durable) or waitUntil."
        ),
    ] = True,
) -> None:
    """Run the Worker locally (wrangler dev) with the current tokens and routes kept synced."""
    import asyncio

    from tokenmanager.edge.dev import DevSetup, run_dev, sync_state_path, write_dev_files
    from tokenmanager.edge.sync import EdgeSync, KvTarget, create_edge_key, load_edge_key
    from tokenmanager.edge.wrangler import PersistentKvWriter, source_project, wrangler_binary

    async def body() -> int:
        async with open_services() as services:
            settings = services.settings
            project = source_project()
            wrangler_binary(project)
            create_edge_key(settings)
            edge_key = load_edge_key(settings)
            setup = DevSetup(
                project=project,
                dev_dir=settings.data_dir / "edge-dev",
                port=port,
                control_plane_url=control_plane,
                use_queue=use_queue,
            )
            actor = cli_actor()
            created = await services.ingest_keys.create(actor, name=f"edge dev :{port}")
            write_dev_files(setup, edge_key, created.key_secret)
            target = KvTarget(
                project=project,
                config=setup.config,
                persist_dir=setup.persist_dir,
                state_path=sync_state_path(settings.data_dir, setup.config, setup.persist_dir),
            )
            # The first sync is a full snapshot, which also deletes token keys left in the local
            # store by an earlier run.
            target.state_path.unlink(missing_ok=True)
            writer = PersistentKvWriter(project, setup.config, setup.persist_dir)
            syncer = EdgeSync(services.database, services.keyring, edge_key, target, writer)
            stdout.print(f"Edge gateway (local Workers runtime) on http://127.0.0.1:{port}")
            try:
                await writer.start()
                return await run_dev(setup, syncer)
            finally:
                await asyncio.shield(writer.stop())
                await asyncio.shield(services.ingest_keys.delete(actor, created.ingest_key.id))

    code = run(body)
    raise typer.Exit(code)
