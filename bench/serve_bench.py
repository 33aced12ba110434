"""`tokenmanager serve` benchmark: the gateway under `serve` against the gateway alone, workers,
long streams and idle connections, every figure against a baseline measured in the same run.

    .venv/bin/python bench/serve_bench.py [--duration 5] [--repeat 3] [--streams 1000]
                                          [--leavers 100] [--idle 5000]
                                          [--gateway-workers N] [--out bench/results/serve.md]

1. p99 and throughput at c=16 (wrk -t1, nginx upstream answering ~200 B of JSON), alternating
   `--repeat` times: `serve` (its default gateway workers), `gateway --workers 1` alone, the
   bare uvicorn + aiohttp pass-through (bench/passthrough.py) and nginx as a reverse proxy.
2. `gateway --workers 2` against `--workers 1`, alternating: throughput, p99 and CPU µs per
   request over every gateway process and its children (usage writers included).
3. Where one worker's CPU goes (py-spy, when installed): the gateway's own pipeline, the
   aiohttp client, the uvicorn server, usage recording, the event loop; µs per request.
4. `--streams` concurrent SSE streams through `serve` from the mock upstream
   (`/stream/{n}?interval_ms=`), `--leavers` of them closed mid-stream: byte-exact bodies, the
   leavers' usage rows (499), upstream streams left open (mock `/stats`), added delay per chunk
   at p99 (against the same streams read from the mock directly), RSS of the gateway processes.
5. `--idle` keep-alive connections held open on `serve`'s gateway, one request each: answered,
   file descriptors in use, and a new request still answered.

The machine is shared: keep runs short, and read ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_bench as gb  # the sibling script's helpers

ROOT = gb.ROOT
PY_SPY = Path(sys.executable).with_name("py-spy")


def tree(pid: int) -> list[int]:
    return [pid, *gb.child_pids(pid)]


def gateway_tree_of_serve(serve_pid: int) -> list[int]:
    """The `tokenmanager gateway` child of `serve` and everything under it."""
    for child in gb.child_pids(serve_pid):
        try:
            if b"gateway" in Path(f"/proc/{child}/cmdline").read_bytes():
                return tree(child)
        except OSError:
            continue
    return []


def cpu_of(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def rss_mib(pids: list[int]) -> float:
    return sum(gb.rss_kib(pid) for pid in pids if Path(f"/proc/{pid}").exists()) / 1024


def open_fds(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
    return total


def wrk_cell(url: str, duration_s: int, headers: dict[str, str], pids: Any) -> dict[str, float]:
    """wrk at c=16; `pids` is called before and after, so processes started meanwhile count."""
    before = {pid: cpu_of([pid]) for pid in pids()}
    figures = gb.run_wrk(url, 16, duration_s, headers)
    after = {pid: cpu_of([pid]) for pid in pids()}
    cpu_s = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    figures["cpu_us_per_request"] = cpu_s / max(figures["requests"], 1) * 1e6
    return figures


# -- 3. profile by stage -----------------------------------------------------------------------

STAGES = (
    ("usage recording", ("usage/recorder", "usage_writer", "pickle")),
    ("aiohttp client", ("aiohttp/",)),
    ("gateway pipeline", ("tokenmanager/gateway/",)),
    ("uvicorn server (httptools)", ("uvicorn/",)),
)


def classify(stack: str) -> str:
    frames = stack.split(";")
    # The innermost frame that belongs to a known stage decides.
    for frame in reversed(frames):
        for stage, markers in STAGES:
            if any(marker in frame for marker in markers):
                return stage
    return "event loop and other"


def profile_stages(pid: int, url: str, duration_s: int, headers: dict[str, str]) -> dict[str, Any]:
    raw = Path(tempfile.mkdtemp(prefix="tm-spy-")) / "profile.txt"
    spy = subprocess.Popen(
        [str(PY_SPY), "record", "-p", str(pid), "-d", str(duration_s), "-r", "250",
         "-f", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    figures = wrk_cell(url, duration_s, headers, lambda: [pid])
    spy.wait(duration_s + 30)
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        counts[classify(stack)] += int(number)
    total = sum(counts.values()) or 1
    shares = {stage: counts[stage] / total for stage, _ in (*STAGES, ("event loop and other", ()))}
    return {"figures": figures, "shares": shares, "samples": total}


# -- 4. long streams ---------------------------------------------------------------------------


async def run_streams(
    base_url: str, headers: dict[str, str], streams: int, leavers: int, chunks: int,
    interval_ms: int,
) -> dict[str, Any]:  # fmt: skip
    import aiohttp

    expected = b"".join(f"data: {json.dumps({'index': i})}\n\n".encode() for i in range(chunks))
    lateness_ms: list[float] = []
    exact = 0
    left = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=chunks * interval_ms / 1000 * 4 + 60)
    url = f"{base_url}/stream/{chunks}?interval_ms={interval_ms}"

    async def one(leaves: bool) -> None:
        nonlocal exact, left
        async with session.get(url, headers=headers) as response:
            assert response.status == 200, response.status
            body = bytearray()
            first = None
            index = 0
            while line := await response.content.readline():
                body += line
                if not line.startswith(b"data:"):
                    continue
                now = time.monotonic()
                first = first if first is not None else now
                lateness_ms.append((now - first) * 1000 - index * interval_ms)
                index += 1
                if leaves and index == 5:
                    response.close()  # drops the connection mid-stream
                    left += 1
                    return
            exact += bytes(body) == expected

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.monotonic()
        await asyncio.gather(*(one(index < leavers) for index in range(streams)))
        elapsed = time.monotonic() - started
    lateness_ms.sort()
    return {
        "exact": exact,
        "left": left,
        "seconds": elapsed,
        "lateness_p50_ms": lateness_ms[len(lateness_ms) // 2],
        "lateness_p99_ms": lateness_ms[int(len(lateness_ms) * 0.99)],
    }


# -- 5. idle keep-alive connections ------------------------------------------------------------


async def hold_idle(port: int, count: int, pids: Any) -> dict[str, Any]:
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    answered = 0
    failures: collections.Counter[str] = collections.Counter()
    request = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"

    async def open_one() -> None:
        nonlocal answered
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status = await asyncio.wait_for(reader.readline(), 30)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await asyncio.wait_for(reader.readexactly(length), 30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            failures[type(exc).__name__] += 1
            return
        connections.append((reader, writer))
        answered += status.startswith(b"HTTP/1.1 200")

    started = time.monotonic()
    semaphore = asyncio.Semaphore(500)  # connect in waves: the listen backlog is finite

    async def limited() -> None:
        async with semaphore:
            await open_one()

    await asyncio.gather(*(limited() for _ in range(count)))
    opened_s = time.monotonic() - started
    fds_held = open_fds(pids())
    still_open = sum(not writer.is_closing() for _, writer in connections)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    extra = (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()
    for _, held in connections:
        held.close()
    return {
        "answered": answered,
        "failures": dict(failures),
        "open_s": opened_s,
        "fds_held": fds_held,
        "still_open": still_open,
        "new_request_answered": extra,
    }


def limits_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft} (hard {hard})"
    return "?"


# -- the run -----------------------------------------------------------------------------------


def benchmark(args: argparse.Namespace) -> None:
    gb.ensure_tools()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the idle connections' client
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="tm-serve-bench-"))
    names = ("upstream", "nginx", "passthrough", "mock", "control", "serve", "gw1", "gw2")
    ports = {name: gb.free_port() for name in names}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOKENMANAGER_")},
        "TOKENMANAGER_DATA_DIR": str(work / "data"),
        "TOKENMANAGER_UPSTREAM_ALLOW": "127.0.0.0/8",
        "TOKENMANAGER_RATE_LIMIT_PER_S": "1000000",
        "TOKENMANAGER_LOG_LEVEL": "WARNING",
    }
    upstream_url = f"http://127.0.0.1:{ports['upstream']}"
    mock_url = f"http://127.0.0.1:{ports['mock']}"
    conf = gb.write_nginx_conf(work, ports["upstream"], ports["nginx"])
    token = gb.prepare_gateway_data(work / "data", upstream_url, env)
    subprocess.run(
        [*gb.TOKENMANAGER, "route", "add", "/mock", mock_url, "--scope", "bench:call"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    headers = {"X-API-Key": token}
    report: dict[str, Any] = {}
    with ExitStack() as stack:

        def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
            process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )

            def stop() -> None:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(60)

            stack.callback(stop)
            gb.wait_for_port(ports[name], 60)
            return process

        start("upstream", [gb.nginx_binary(), "-c", str(conf), "-p", str(work),
                           "-g", "daemon off;"])  # fmt: skip
        start("passthrough", [gb.PYTHON, str(ROOT / "bench/passthrough.py"), "--port",
                              str(ports["passthrough"]), "--upstream", upstream_url])  # fmt: skip
        start("mock", [*gb.TOKENMANAGER, "mock-upstream", "--port", str(ports["mock"])])
        workers = ["--gateway-workers", str(args.gateway_workers)] if args.gateway_workers else []
        serve = start("serve", [*gb.TOKENMANAGER, "serve", "--port", str(ports["control"]),
                                "--gateway-port", str(ports["serve"]), *workers])  # fmt: skip
        gw1 = start("gw1", [*gb.TOKENMANAGER, "gateway", "--port", str(ports["gw1"]),
                            "--workers", "1"])  # fmt: skip
        gw2 = start("gw2", [*gb.TOKENMANAGER, "gateway", "--port", str(ports["gw2"]),
                            "--workers", "2"])  # fmt: skip
        time.sleep(2)  # gw2's second worker and the usage writers start after the port opens

        def url(name: str, path: str = "/bench/v1/chat") -> str:
            return f"http://127.0.0.1:{ports[name]}{path}"

        # 1. serve vs gateway alone vs the baselines
        targets = {
            "serve (gateway processes)": (url("serve"), lambda: gateway_tree_of_serve(serve.pid)),
            "gateway --workers 1": (url("gw1"), lambda: tree(gw1.pid)),
            "bare pass-through": (url("passthrough", "/v1/chat"), lambda: [0]),
            "nginx reverse proxy": (url("nginx", "/v1/chat"), lambda: [0]),
        }
        for target_url, _ in targets.values():
            gb.run_wrk(target_url, 16, 2, headers)  # warm-up
        rounds: list[dict[str, dict[str, float]]] = []
        for repeat in range(args.repeat):
            cells = {
                name: wrk_cell(target_url, args.duration, headers, pids)
                for name, (target_url, pids) in targets.items()
            }
            rounds.append(cells)
            print(f"round {repeat + 1}: " + "; ".join(
                f"{name} {c['rps']:.0f} req/s p99 {c['p99_ms']:.2f} ms"
                for name, c in cells.items()), flush=True)  # fmt: skip
        report["rounds"] = rounds

        # 2. two workers vs one
        gb.run_wrk(url("gw2"), 16, 2, headers)
        worker_rounds = []
        for _ in range(args.repeat):
            worker_rounds.append(
                {
                    "1 worker": wrk_cell(url("gw1"), args.duration, headers, lambda: tree(gw1.pid)),
                    "2 workers": wrk_cell(
                        url("gw2"), args.duration, headers, lambda: tree(gw2.pid)
                    ),
                }
            )
            print("workers: " + "; ".join(
                f"{name} {c['rps']:.0f} req/s {c['cpu_us_per_request']:.0f} µs/req"
                for name, c in worker_rounds[-1].items()), flush=True)  # fmt: skip
        report["workers"] = worker_rounds

        # 3. profile by stage (one worker)
        if PY_SPY.exists():
            report["profile"] = profile_stages(gw1.pid, url("gw1"), args.duration, headers)
            print(f"profile: {report['profile']['shares']}", flush=True)

        # 4. long streams through serve, against the mock directly
        gateway_pids = lambda: gateway_tree_of_serve(serve.pid)  # noqa: E731
        chunks, interval_ms = args.chunks, args.interval_ms
        direct = asyncio.run(
            run_streams(mock_url, {}, args.streams, args.leavers, chunks, interval_ms)
        )
        rss_before = rss_mib(gateway_pids())
        through = asyncio.run(
            run_streams(
                f"http://127.0.0.1:{ports['serve']}/mock", headers, args.streams, args.leavers,
                chunks, interval_ms,
            )
        )  # fmt: skip
        rss_after = rss_mib(gateway_pids())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            stats_url = f"{mock_url}/stats"
            with urllib.request.urlopen(stats_url, timeout=5) as answer:  # noqa: S310 - http://127.0.0.1
                open_streams = json.loads(answer.read())["open_streams"]
            if open_streams == 0:
                break
            time.sleep(0.2)
        report["streams"] = {
            "direct": direct, "through": through, "rss_before_mib": rss_before,
            "rss_after_mib": rss_after, "open_upstream_streams": open_streams,
        }  # fmt: skip
        print(f"streams: {report['streams']}", flush=True)

        # 5. idle keep-alive connections on serve's gateway
        report["idle"] = asyncio.run(hold_idle(ports["serve"], args.idle, gateway_pids))
        report["idle"]["limit"] = limits_of(gateway_pids()[0])
        print(f"idle: {report['idle']}", flush=True)

        serve.send_signal(signal.SIGTERM)  # drains the usage queues before the rows are read
        report["serve_exit_code"] = serve.wait(60)
    database = sqlite3.connect(work / "data" / "tokenmanager.db")
    report["stream_rows"] = dict(
        database.execute(
            "SELECT response_status, count(*) FROM token_usage_logs WHERE route_path = '/mock' "
            "GROUP BY response_status"
        ).fetchall()
    )
    database.close()
    write_report(args, report, load_at_start)
    shutil.rmtree(work, ignore_errors=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_report(args: argparse.Namespace, report: dict[str, Any], load: tuple[float, ...]) -> None:
    rounds = report["rounds"]
    command = (
        f".venv/bin/python bench/serve_bench.py --duration {args.duration} --repeat {args.repeat} "
        f"--streams {args.streams} --leavers {args.leavers} --chunks {args.chunks} "
        f"--interval-ms {args.interval_ms} --idle {args.idle}"
        + (f" --gateway-workers {args.gateway_workers}" if args.gateway_workers else "")
    )
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load average at the start {' '.join(f'{x:.2f}' for x in load)}, at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (a machine shared with other work: "
        "read the ratios, measured in the same run).",
        "",
        f"    {command}",
        "",
        "### 1. c=16, wrk -t1, alternating rounds",
        "",
        "| round | target | req/s | p50 ms | p99 ms |",
        "|---:|---|---:|---:|---:|",
    ]
    for index, cells in enumerate(rounds, 1):
        for name, c in cells.items():
            lines.append(
                f"| {index} | {name} | {c['rps']:.0f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} |"
            )

    def ratio(a: str, b: str, key: str) -> list[float]:
        return [cells[a][key] / cells[b][key] for cells in rounds]

    def listed(values: list[float]) -> str:
        return f"{median(values):.2f} (rounds: {', '.join(f'{v:.2f}' for v in values)})"

    serve, alone = "serve (gateway processes)", "gateway --workers 1"
    lines += [
        "",
        f"- p99 under `serve` / p99 of `gateway` alone: {listed(ratio(serve, alone, 'p99_ms'))}",
        f"- p99 under `serve`: {listed([c[serve]['p99_ms'] for c in rounds])} ms",
        f"- throughput gateway / bare pass-through: "
        f"{listed(ratio(alone, 'bare pass-through', 'rps'))}",
        f"- throughput gateway / nginx reverse proxy: "
        f"{listed(ratio(alone, 'nginx reverse proxy', 'rps'))}",
        f"- throughput `serve` / gateway alone: {listed(ratio(serve, alone, 'rps'))}",
        "",
        "### 2. `gateway --workers 2` vs `--workers 1` (CPU over every gateway process and child)",
        "",
        "| round | workers | req/s | p99 ms | CPU µs/req |",
        "|---:|---|---:|---:|---:|",
    ]
    for index, cells in enumerate(report["workers"], 1):
        for name, c in cells.items():
            lines.append(f"| {index} | {name} | {c['rps']:.0f} | {c['p99_ms']:.2f} "
                         f"| {c['cpu_us_per_request']:.0f} |")  # fmt: skip
    cpu_ratio = [c["2 workers"]["cpu_us_per_request"] / c["1 worker"]["cpu_us_per_request"]
                 for c in report["workers"]]  # fmt: skip
    rps_ratio = [c["2 workers"]["rps"] / c["1 worker"]["rps"] for c in report["workers"]]
    lines += [
        "",
        f"- CPU µs per request, 2 workers / 1: {listed(cpu_ratio)}",
        f"- throughput, 2 workers / 1: {listed(rps_ratio)} (wrk and nginx share the 2 cores)",
    ]
    if "profile" in report:
        profile = report["profile"]
        cpu = profile["figures"]["cpu_us_per_request"]
        lines += [
            "",
            f"### 3. One worker's CPU by stage (py-spy, {profile['samples']} samples, "
            f"{cpu:.0f} µs/req in the worker itself, "
            f"{profile['figures']['rps']:.0f} req/s)",
            "",
            "| stage | share | µs/req |",
            "|---|---:|---:|",
            *(
                f"| {stage} | {share * 100:.0f} % | {share * cpu:.0f} |"
                for stage, share in profile["shares"].items()
            ),
        ]
    streams = report["streams"]
    direct, through = streams["direct"], streams["through"]
    full = args.streams - args.leavers
    lines += [
        "",
        f"### 4. {args.streams} concurrent SSE streams through `serve` ({args.chunks} chunks, "
        f"one every {args.interval_ms} ms), {args.leavers} clients leaving after 5 chunks",
        "",
        f"- byte-exact: {through['exact']} of {full} (direct from the mock: {direct['exact']})",
        f"- leavers recorded: {report['stream_rows'].get(499, 0)} as 499 of {args.leavers}; "
        f"completed recorded as 200: {report['stream_rows'].get(200, 0)} of {full}",
        f"- upstream streams still open afterwards (mock /stats): "
        f"{streams['open_upstream_streams']}",
        f"- chunk lateness p99: {through['lateness_p99_ms']:.1f} ms through the gateway, "
        f"{direct['lateness_p99_ms']:.1f} ms direct: added "
        f"{through['lateness_p99_ms'] - direct['lateness_p99_ms']:.1f} ms per chunk at p99 "
        f"(p50 {through['lateness_p50_ms'] - direct['lateness_p50_ms']:.1f} ms)",
        f"- gateway processes' RSS: {streams['rss_before_mib']:.0f} → "
        f"{streams['rss_after_mib']:.0f} MiB",
    ]
    idle = report["idle"]
    lines += [
        "",
        f"### 5. {args.idle} idle keep-alive connections on `serve`'s gateway",
        "",
        f"- answered {idle['answered']} of {args.idle} (failures {idle['failures'] or 'none'}), "
        f"opened in {idle['open_s']:.1f} s, {idle['still_open']} still open",
        f"- file descriptors held by the gateway processes: {idle['fds_held']}; their limit "
        f"{idle['limit']}",
        f"- a new request meanwhile answered: {idle['new_request_answered']}",
        f"- `serve` exit code after SIGTERM: {report['serve_exit_code']}",
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    (args.out.with_suffix(".json")).write_text(json.dumps(report, indent=1, default=str))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk cell")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--leavers", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=50, help="chunks per stream")
    parser.add_argument("--interval-ms", type=int, default=200, help="between chunks")
    parser.add_argument("--idle", type=int, default=5000, help="idle keep-alive connections")
    parser.add_argument(
        "--gateway-workers", type=int, default=None, help="serve's (default: its own default)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/serve.md")
    benchmark(parser.parse_args())


if __name__ == "__main__":
    main()
