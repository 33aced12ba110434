"""Edge benchmark: added latency of the Worker on the local Workers runtime (`tokenmanager edge
dev`: wrangler dev + workerd) and of the Python gateway, against calling the upstream directly,
with CPU per request, in one run.

Targets, all on loopback, each in front of the same nginx upstream answering ~200 bytes of JSON:
    upstream        nginx directly (the floor)
    python gateway  `tokenmanager serve`'s gateway process (every feature on), SQLite
    edge worker     `tokenmanager edge dev` (usage through the local Queue to the same control
                    plane); CPU counted for workerd alone and for the whole tree (workerd, the
                    wrangler node process in front of it, the Python sync loop)
    edge, Miniflare the same Worker and KV store on Miniflare's API (edge/scripts/serve.mjs),
                    without wrangler dev's proxy worker; usage via waitUntil
Each target gets wrk at concurrency 1 and 16 for --duration seconds after a 2 s warm-up.

    .venv/bin/python bench/edge_bench.py [--duration 10] [--out bench/results/edge.md]

Needs nginx and wrk (Debian packages), Node.js and `npm ci` in edge/. Local workerd is not
Cloudflare's network: the figures compare runtimes on one machine, not edge latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from gateway_bench import (
    TOKENMANAGER,
    cpu_seconds,
    ensure_tools,
    free_port,
    nginx_binary,
    prepare_gateway_data,
    run_wrk,
    wait_for_port,
    write_nginx_conf,
)

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCIES = (1, 16)
OFFLINE_ENV = {
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_SEND_ERROR_REPORTS": "false",
    "WRANGLER_HIDE_BANNER": "true",
    "CLOUDFLARE_CF_FETCH_ENABLED": "false",
}


def tree_pids(pid: int) -> list[int]:
    from gateway_bench import child_pids

    return [pid, *child_pids(pid)]


def workerd_pids(pid: int) -> list[int]:
    found = []
    for candidate in tree_pids(pid):
        try:
            if Path(f"/proc/{candidate}/comm").read_text().strip() == "workerd":
                found.append(candidate)
        except FileNotFoundError:
            continue
    return found


def own_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of exactly these processes (not their children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def wait_healthy(url: str, deadline_s: float = 90.0) -> None:
    import urllib.request

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become healthy")


def benchmark(duration_s: int, out: Path) -> None:
    ensure_tools()
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="tm-edge-bench-"))
    ports = {
        name: free_port()
        for name in ("upstream", "nginx", "control", "gateway", "edge", "miniflare")
    }
    env = {
        **os.environ,
        **OFFLINE_ENV,
        "TOKENMANAGER_DATA_DIR": str(work / "data"),
        "TOKENMANAGER_UPSTREAM_ALLOW": "127.0.0.0/8",
        "TOKENMANAGER_RATE_LIMIT_PER_S": "1000000",
        "TOKENMANAGER_LOG_LEVEL": "WARNING",
        "XDG_CONFIG_HOME": str(work / "wrangler-config"),
    }
    env.pop("TOKENMANAGER_DATABASE_URL", None)
    upstream_url = f"http://127.0.0.1:{ports['upstream']}"
    conf = write_nginx_conf(work, ports["upstream"], ports["nginx"])
    token = prepare_gateway_data(work / "data", upstream_url, env)
    with ExitStack() as stack:

        def start(command: list[str]) -> subprocess.Popen[bytes]:
            process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )

            def stop() -> None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)

            stack.callback(stop)
            return process

        nginx = start([nginx_binary(), "-c", str(conf), "-p", str(work), "-g", "daemon off;"])
        wait_for_port(ports["upstream"])
        serve = start([*TOKENMANAGER, "serve", "--port", str(ports["control"]),
                       "--gateway-port", str(ports["gateway"])])  # fmt: skip
        wait_for_port(ports["gateway"])
        wait_for_port(ports["control"])
        edge = start([*TOKENMANAGER, "edge", "dev", "--port", str(ports["edge"]),
                      "--control-plane", f"http://127.0.0.1:{ports['control']}"])  # fmt: skip
        wait_healthy(f"http://127.0.0.1:{ports['edge']}")
        dev_dir = work / "data" / "edge-dev"
        secrets = dict(
            line.split("=", 1) for line in (dev_dir / ".dev.vars").read_text().splitlines()
        )
        env.update({name: value.strip('"') for name, value in secrets.items()})
        bare = start(["node", str(ROOT / "edge/scripts/serve.mjs"), str(ports["miniflare"]),
                      str(dev_dir / "state"), f"http://127.0.0.1:{ports['control']}"])  # fmt: skip
        wait_healthy(f"http://127.0.0.1:{ports['miniflare']}")
        gateway_pids = [p for p in tree_pids(serve.pid) if _listens_on(p, ports["gateway"])]
        targets = {
            "upstream (nginx direct)": (f"{upstream_url}/v1/chat", lambda: [nginx.pid], True),
            "python gateway": (
                f"http://127.0.0.1:{ports['gateway']}/bench/v1/chat",
                lambda: gateway_pids or [serve.pid], True),
            "edge worker, wrangler dev (workerd only)": (
                f"http://127.0.0.1:{ports['edge']}/bench/v1/chat",
                lambda: workerd_pids(edge.pid), False),
            "edge worker, Miniflare API (workerd only)": (
                f"http://127.0.0.1:{ports['miniflare']}/bench/v1/chat",
                lambda: workerd_pids(bare.pid), False),
        }  # fmt: skip
        headers = {"X-API-Key": token}
        results: dict[str, dict[int, dict[str, float]]] = {}
        for name, (url, pids_of, with_children) in targets.items():
            results[name] = {}
            for concurrency in CONCURRENCIES:
                run_wrk(url, concurrency, 2, headers)  # warm-up
                pids = pids_of()
                measure = cpu_seconds if with_children else own_cpu_seconds
                cpu_before = measure(pids)
                tree_pid = bare.pid if "Miniflare" in name else edge.pid
                tree_before = cpu_seconds([tree_pid])
                figures = run_wrk(url, concurrency, duration_s, headers)
                requests = max(figures["requests"], 1)
                figures["cpu_us_per_request"] = (measure(pids) - cpu_before) / requests * 1e6
                if name.startswith("edge"):
                    figures["tree_cpu_us_per_request"] = (
                        (cpu_seconds([tree_pid]) - tree_before) / requests * 1e6
                    )
                results[name][concurrency] = figures
                print(f"{name:28s} c={concurrency:<3d} {figures['rps']:8.0f} req/s  "
                      f"p50 {figures['p50_ms']:.3f} ms  p99 {figures['p99_ms']:.3f} ms  "
                      f"cpu {figures['cpu_us_per_request']:.0f} us/req  "
                      f"non-2xx {figures['non_2xx']}", flush=True)  # fmt: skip
        revocation_s = measure_revocation(env, f"http://127.0.0.1:{ports['edge']}", token)
        print(f"revocation seen by edge dev after {revocation_s[0]:.2f} s "
              f"({revocation_s[1]:.2f} s from the command's start)", flush=True)  # fmt: skip
    write_report(out, duration_s, results, load_at_start, revocation_s)
    shutil.rmtree(work, ignore_errors=True)


def measure_revocation(env: dict[str, str], edge_url: str, token: str) -> tuple[float, float]:
    """Seconds from `tokenmanager token revoke` returning, and from its start (which includes
    the command's own start-up and commit), to the Worker's first 401."""
    import json
    import urllib.error
    import urllib.request

    listed = subprocess.run([*TOKENMANAGER, "token", "list", "--json"], check=True,
                            capture_output=True, text=True, env=env).stdout  # fmt: skip
    token_id = str(json.loads(listed)[0]["id"])
    command_started = time.monotonic()
    subprocess.run([*TOKENMANAGER, "token", "revoke", token_id], check=True,
                   capture_output=True, env=env)  # fmt: skip
    revoked_at = time.monotonic()
    url = f"{edge_url}/bench/v1/chat"
    request = urllib.request.Request(url, headers={"X-API-Key": token})  # noqa: S310 - loopback
    while time.monotonic() - revoked_at < 60:
        try:
            with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - loopback
                pass
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                seen_at = time.monotonic()
                return seen_at - revoked_at, seen_at - command_started
        time.sleep(0.02)
    raise RuntimeError("the revocation did not reach the Worker within 60 s")


def _listens_on(pid: int, port: int) -> bool:
    """Whether the process has a listening socket on the port (finds the gateway process)."""
    try:
        links = [str(fd.readlink()) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        inodes = {link[8:-1] for link in links if link.startswith("socket:")}
    except (FileNotFoundError, PermissionError):
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            port_matches = int(fields[1].rsplit(":", 1)[1], 16) == port
            if fields[3] == "0A" and port_matches and fields[9] in inodes:
                return True
    return False


def write_report(
    out: Path,
    duration_s: int,
    results: dict[str, dict[int, dict[str, float]]],
    load_at_start: tuple[float, float, float],
    revocation_s: tuple[float, float],
) -> None:
    direct = results["upstream (nginx direct)"]
    lines = [
        "# Edge Worker benchmark",
        "",
        "Command: `.venv/bin/python bench/edge_bench.py --duration "
        f"{duration_s}` (bench/edge_bench.py says what is measured).",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores "
        f"(load average at the start {' '.join(f'{x:.2f}' for x in load_at_start)}, at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}: other work shares the machine), "
        f"wrk -t1, {duration_s} s per cell after a 2 s warm-up. One run: read the ratios, not "
        "the absolute figures.",
        "",
        "| target | c | req/s | p50 ms | p99 ms | added p50 ms vs direct | CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_concurrency in results.items():
        for concurrency, f in by_concurrency.items():
            added = f["p50_ms"] - direct[concurrency]["p50_ms"]
            cpu = f"{f['cpu_us_per_request']:.0f}"
            if "tree_cpu_us_per_request" in f:
                cpu += f" (whole process tree {f['tree_cpu_us_per_request']:.0f})"
            lines.append(
                f"| {name} | {concurrency} | {f['rps']:.0f} | {f['p50_ms']:.3f} "
                f"| {f['p99_ms']:.3f} | {added:.3f} | {cpu} |"
            )
    python = results["python gateway"]
    lines += ["", "Ratios from this run:", ""]
    for name in ("edge worker, wrangler dev (workerd only)",
                 "edge worker, Miniflare API (workerd only)"):  # fmt: skip
        edge = results[name]
        lines += [
            f"- {name.split(' (')[0]}, c={c}: added p50 "
            f"{edge[c]['p50_ms'] - direct[c]['p50_ms']:.3f} ms vs the python gateway's "
            f"{python[c]['p50_ms'] - direct[c]['p50_ms']:.3f} ms; throughput edge / python "
            f"{edge[c]['rps'] / python[c]['rps']:.2f}"
            for c in CONCURRENCIES
        ]
    lines += [
        "",
        f"Revocation: the Worker under `edge dev` answered 401 {revocation_s[0]:.2f} s after "
        f"`tokenmanager token revoke` returned ({revocation_s[1]:.2f} s after the command "
        "started, its own start-up included): the change-feed check every 0.1 s, then one write "
        "through edge dev's long-lived local KV writer.",
        "",
        "The Python gateway's CPU includes its usage-writer child; the edge's workerd figure "
        "excludes the control plane that ingests its usage (the whole-tree figure adds wrangler's "
        "node process and the sync loop). Under `wrangler dev` (what `tokenmanager edge dev` runs) "
        "requests pass wrangler's own proxy worker and the inspector first; the Miniflare-API "
        "run (edge/scripts/serve.mjs, same Worker, same KV store, usage via waitUntil) shows the "
        "Worker without them. Neither is Cloudflare's network.",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per cell (default 10)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/edge.md")
    args = parser.parse_args()
    benchmark(args.duration, args.out)


if __name__ == "__main__":
    main()
