"""Gateway benchmark: throughput, latency and CPU per request against baselines, in one run.

Targets, all on loopback, each behind the same nginx upstream answering ~200 bytes of JSON:
    upstream      nginx directly (the floor)
    nginx-proxy   nginx as a reverse proxy (the practical limit here)
    passthrough   bench/passthrough.py: uvicorn + aiohttp, no features (our stack's floor)
    naive         bench/naive_proxy.py: FastAPI + httpx (what people write first)
    gateway       `tokenmanager gateway`, every feature on: token check, scopes, rate limit,
                  credential injection, usage recording (SQLite, the embedded default)
Each target gets wrk at concurrency 1, 16 and 64 for --duration seconds (after a warm-up).
Then a 1 GiB response is streamed through the gateway from the mock upstream while the
gateway's RSS is sampled.

    .venv/bin/python bench/gateway_bench.py [--duration 10] [--repeat 3]
                                            [--out bench/results/gateway.md]

CPU per request counts the target's processes and their children (the gateway's usage writer).
`--repeat N` then measures the bare pass-through and the gateway N more times each at c=16,
alternating, and reports the spread of their throughput ratio (the machine is shared: one run
of each is not enough to trust a ratio).

Needs nginx and wrk (Debian packages; installed with apt-get when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOKENMANAGER = [PYTHON, "-m", "tokenmanager"]
BODY = json.dumps(
    {
        "id": "bench",
        "object": "chat.completion",
        "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
)
CONCURRENCIES = (1, 16, 64)
ONE_GIB = 1024**3


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def ensure_tools() -> None:
    missing = [
        tool
        for tool in ("nginx", "wrk")
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        print(f"installing {', '.join(missing)} with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx", "wrk"], check=True, env=env)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def write_nginx_conf(directory: Path, upstream_port: int, proxy_port: int) -> Path:
    conf = directory / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
error_log {directory}/error.log warn;
pid {directory}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    keepalive_requests 1000000;
    upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{upstream_port};
        location / {{ default_type application/json; return 200 '{BODY}'; }}
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )
    return conf


def wait_for_port(port: int, deadline_s: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes and their children so far."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        for child in [pid, *child_pids(pid)]:
            try:
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def child_pids(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    result = [int(c) for c in children]
    for child in list(result):
        result.extend(child_pids(child))
    return result


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, float]:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if not match:
            raise RuntimeError(f"no {percent}% latency in wrk output:\n{output}")
        return float(match.group(1)) * _UNITS_MS[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    requests = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    assert rps, output
    assert requests, output
    return {
        "rps": float(rps.group(1)),
        "requests": int(requests.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def run_wrk(
    url: str, concurrency: int, duration_s: int, headers: dict[str, str]
) -> dict[str, float]:
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--latency", *header_args, url]
    return parse_wrk(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def prepare_gateway_data(data_dir: Path, upstream_url: str, env: dict[str, str]) -> str:
    def cli(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            [*TOKENMANAGER, *args], check=True, capture_output=True, text=True, env=env, input=stdin
        ).stdout

    cli("migrate")
    cli("team", "create", "bench-team", "--name", "Bench")
    token = json.loads(cli("token", "issue", "--name", "bench", "--team", "bench-team",
                           "--scope", "bench:call", "--json"))["token"]  # fmt: skip
    cli("route", "add", "/bench", upstream_url, "--scope", "bench:call",
        "--auth-header", "Authorization", "--auth-value-stdin",
        stdin="Bearer sk-bench-upstream\n")  # fmt: skip
    return str(token)


def benchmark(duration_s: int, repeat: int, out: Path) -> None:
    ensure_tools()
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="tm-bench-"))
    ports = {
        name: free_port()
        for name in ("upstream", "nginx", "passthrough", "naive", "gateway", "mock")
    }
    env = {
        **os.environ,
        "TOKENMANAGER_DATA_DIR": str(work / "data"),
        "TOKENMANAGER_UPSTREAM_ALLOW": "127.0.0.0/8",
        "TOKENMANAGER_RATE_LIMIT_PER_S": "1000000",
        "TOKENMANAGER_LOG_LEVEL": "WARNING",
    }
    env.pop("TOKENMANAGER_DATABASE_URL", None)
    upstream_url = f"http://127.0.0.1:{ports['upstream']}"
    conf = write_nginx_conf(work, ports["upstream"], ports["nginx"])
    token = prepare_gateway_data(work / "data", upstream_url, env)
    with ExitStack() as stack:

        def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
            process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
            stack.callback(lambda: (process.terminate(), process.wait(30)))
            wait_for_port(ports[name])
            return process

        nginx = start(
            "upstream", [nginx_binary(), "-c", str(conf), "-p", str(work), "-g", "daemon off;"]
        )
        passthrough = start("passthrough", [PYTHON, str(ROOT / "bench/passthrough.py"),
                            "--port", str(ports["passthrough"]),
                            "--upstream", upstream_url])  # fmt: skip
        naive = start("naive", [PYTHON, str(ROOT / "bench/naive_proxy.py"),
                      "--port", str(ports["naive"]), "--upstream", upstream_url])  # fmt: skip
        gateway = start("gateway", [*TOKENMANAGER, "gateway", "--port", str(ports["gateway"]),
                                    "--workers", "1"])  # fmt: skip
        mock = start("mock", [*TOKENMANAGER, "mock-upstream", "--port", str(ports["mock"])])
        del mock
        targets = {
            "upstream (nginx direct)": (f"{upstream_url}/v1/chat", [nginx.pid]),
            "nginx reverse proxy": (f"http://127.0.0.1:{ports['nginx']}/v1/chat", [nginx.pid]),
            "bare pass-through (uvicorn+aiohttp)": (
                f"http://127.0.0.1:{ports['passthrough']}/v1/chat", [passthrough.pid]),
            "naive proxy (FastAPI+httpx)": (
                f"http://127.0.0.1:{ports['naive']}/v1/chat", [naive.pid]),
            "tokenmanager gateway (all features)": (
                f"http://127.0.0.1:{ports['gateway']}/bench/v1/chat", [gateway.pid]),
        }  # fmt: skip
        headers = {"X-API-Key": token}
        results: dict[str, dict[int, dict[str, float]]] = {}
        for name, (url, pids) in targets.items():
            results[name] = {}
            for concurrency in CONCURRENCIES:
                run_wrk(
                    url, concurrency, 2, headers
                )  # warm-up: pools, caches, JIT-free but lazy paths
                cpu_before = cpu_seconds(pids)
                figures = run_wrk(url, concurrency, duration_s, headers)
                figures["cpu_us_per_request"] = (
                    (cpu_seconds(pids) - cpu_before) / max(figures["requests"], 1) * 1e6
                )
                results[name][concurrency] = figures
                print(f"{name:40s} c={concurrency:<3d} {figures['rps']:9.0f} req/s  "
                      f"p50 {figures['p50_ms']:.3f} ms  p99 {figures['p99_ms']:.3f} ms  "
                      f"cpu {figures['cpu_us_per_request']:.0f} us/req  "
                      f"non-2xx {figures['non_2xx']}",
                      flush=True)  # fmt: skip
        ratios = []
        for _ in range(repeat):
            pair = {}
            for name in (
                "bare pass-through (uvicorn+aiohttp)",
                "tokenmanager gateway (all features)",
            ):
                pair[name] = run_wrk(targets[name][0], 16, duration_s, headers)["rps"]
            ratios.append(
                pair["tokenmanager gateway (all features)"]
                / pair["bare pass-through (uvicorn+aiohttp)"]
            )
            print(f"repeat: gateway / bare at c=16 = {ratios[-1]:.2f}", flush=True)
        # Route to the mock upstream for the 1 GiB stream.
        subprocess.run(
            [*TOKENMANAGER, "route", "add", "/mock", f"http://127.0.0.1:{ports['mock']}",
             "--scope", "bench:call"], check=True, capture_output=True, env=env,
        )  # fmt: skip
        time.sleep(1.5)  # the gateway picks up the new route at its next change poll
        stream = asyncio.run(stream_one_gib(ports["gateway"], token, gateway.pid))
    write_report(out, duration_s, results, stream, ratios, load_at_start)
    shutil.rmtree(work, ignore_errors=True)


async def stream_one_gib(gateway_port: int, token: str, gateway_pid: int) -> dict[str, float]:
    import aiohttp

    from tokenmanager.mock_upstream.app import CHUNK_BYTES, pattern_bytes

    expected = hashlib.sha256()
    block = pattern_bytes(CHUNK_BYTES)
    for _ in range(ONE_GIB // CHUNK_BYTES):
        expected.update(block)
    rss_before = rss_kib(gateway_pid)
    rss_peak = rss_before
    received = hashlib.sha256()
    size = 0
    started = time.monotonic()
    url = f"http://127.0.0.1:{gateway_port}/mock/bytes/{ONE_GIB}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"X-API-Key": token}) as response,
    ):
        async for chunk in response.content.iter_chunked(1 << 20):
            received.update(chunk)
            size += len(chunk)
            rss_peak = max(rss_peak, rss_kib(gateway_pid))
    elapsed = time.monotonic() - started
    return {
        "bytes": size,
        "byte_exact": float(size == ONE_GIB and received.digest() == expected.digest()),
        "seconds": elapsed,
        "rss_before_mib": rss_before / 1024,
        "rss_peak_mib": rss_peak / 1024,
        "rss_growth_mib": (rss_peak - rss_before) / 1024,
    }


def write_report(
    out: Path,
    duration_s: int,
    results: dict[str, dict[int, dict[str, float]]],
    stream: dict[str, float],
    ratios: list[float],
    load_at_start: tuple[float, float, float],
) -> None:
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores "
        f"(load average at the start {' '.join(f'{x:.2f}' for x in load_at_start)}, at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}: other work shares the machine), "
        f"wrk -t1, {duration_s} s per cell after a 2 s warm-up, one worker process per target.",
        "",
        "| target | c | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_concurrency in results.items():
        for concurrency, f in by_concurrency.items():
            lines.append(
                f"| {name} | {concurrency} | {f['rps']:.0f} | {f['p50_ms']:.3f} "
                f"| {f['p99_ms']:.3f} "
                f"| {f['cpu_us_per_request']:.0f} | {f['non_2xx']} |"
            )
    gateway = results["tokenmanager gateway (all features)"]
    bare = results["bare pass-through (uvicorn+aiohttp)"]
    naive = results["naive proxy (FastAPI+httpx)"]
    direct = results["upstream (nginx direct)"]
    lines += [
        "",
        "Ratios from this run:",
        "",
        "- gateway / bare pass-through throughput at c=16: "
        f"{gateway[16]['rps'] / bare[16]['rps']:.2f}"
        + (
            f" (then {len(ratios)} alternating repeats: {', '.join(f'{r:.2f}' for r in ratios)})"
            if ratios
            else ""
        ),
        f"- gateway / naive proxy throughput at c=16: {gateway[16]['rps'] / naive[16]['rps']:.1f}x",
        "- added p50 latency over the upstream at c=1: "
        f"{gateway[1]['p50_ms'] - direct[1]['p50_ms']:.3f} ms",
        f"- gateway p99 at c=16: {gateway[16]['p99_ms']:.3f} ms",
        f"- 1 GiB stream: byte-exact {bool(stream['byte_exact'])}, {stream['seconds']:.1f} s, "
        f"gateway RSS {stream['rss_before_mib']:.0f} → peak {stream['rss_peak_mib']:.0f} MiB "
        f"(growth {stream['rss_growth_mib']:.1f} MiB)",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per cell (default 10)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="extra c=16 bare/gateway pairs (default 3)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gateway.md")
    args = parser.parse_args()
    benchmark(args.duration, args.repeat, args.out)


if __name__ == "__main__":
    main()
