"""LLM accounting benchmark (issue 13's "Speed"): gateway CPU per call with and without
accounting, the non-LLM path against the gateway before issue 13, and the budget check.

    .venv/bin/python bench/llm_bench.py [--runs 2] [--rounds 3] [--out bench/results/llm.md]

1. Accounting: `tokenmanager mock-upstream` (its own process) behind `tokenmanager gateway
   --workers 1` on SQLite, three routes to it: `provider: null`, `openai` with
   include_stream_usage on, `openai` with it off. A 1,000-chunk SSE chat completion and a
   ~64 KiB JSON completion (small requests), from a few concurrent aiohttp callers in this
   process, batch by batch and route by route interleaved; CPU is the gateway's process
   tree's (its usage-writer child included) from /proc, per call.
2. Non-LLM path: the current gateway and the one at --before-commit (a temporary git worktree,
   its own data dir migrated by its own code) in front of nginx answering ~200 bytes of JSON,
   wrk against each in turn, several rounds; CPU per request of each gateway's process tree.
3. Budget check: in this process, `BudgetGuard.check` with a `StoreLedger` whose spend is read
   and with a `RedisLedger` (real Redis), beside a `TokenVerifier.verify` cache hit.

Each run reports ratios measured within it; --runs repeats the whole benchmark to show the
spread. Needs nginx and wrk (installed with apt-get when missing, as gateway_bench.py does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway_bench import (
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
PYTHON = sys.executable
TOKENMANAGER = [PYTHON, "-m", "tokenmanager"]
MODEL = "bench-model"
SSE_CHUNKS = 1000
# The mock's non-streamed reply is then the words "w0 w1 ... w10899": a chat completion body
# of about 64 KiB (65,500 bytes) from a small request, as a long completion is.
JSON_REPLY_WORDS = 10_900
CALLERS = 4
# Time for the usage writer to write the batch's events (flush interval 0.2 s) before the
# CPU is read, so a batch's recording is counted in its own cell, not the next one's.
SETTLE_S = 0.5
ROUTES = {
    "null": "/plain",  # provider: null
    "openai, include_stream_usage on": "/llm",
    "openai, include_stream_usage off": "/llm-nousage",
}
NULL_ROUTE = "null"


def base_env(data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "TOKENMANAGER_DATA_DIR": str(data_dir),
        "TOKENMANAGER_UPSTREAM_ALLOW": "127.0.0.0/8",
        "TOKENMANAGER_RATE_LIMIT_PER_S": "1000000",
        "TOKENMANAGER_LOG_LEVEL": "WARNING",
    }
    for name in ("TOKENMANAGER_DATABASE_URL", "TOKENMANAGER_REDIS_URL", "PYTHONPATH"):
        env.pop(name, None)
    return env


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [*TOKENMANAGER, *args], check=True, capture_output=True, text=True, env=env, input=stdin
    ).stdout


@contextlib.contextmanager
def process(command: list[str], env: dict[str, str], port: int) -> Iterator[int]:
    """A server process listening on `port`; its pid."""
    child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield child.pid
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU of the process itself, without its children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} to {max(values):.3f}"


# -- 1. accounting -----------------------------------------------------------------------------


def llm_requests() -> dict[str, dict[str, Any]]:
    messages = [{"role": "user", "content": "Count for the benchmark, please."}]
    return {
        "SSE, 1,000 chunks": {
            "model": MODEL,
            "messages": messages,
            "stream": True,
            "mock_chunks": SSE_CHUNKS,
            "mock_interval_ms": 0,
        },
        "JSON, 64 KiB": {"model": MODEL, "messages": messages, "mock_chunks": JSON_REPLY_WORDS},
    }


def prepare_llm_data(env: dict[str, str], mock_url: str) -> str:
    cli(env, "migrate")
    cli(env, "team", "create", "bench-team", "--name", "Bench")
    token = json.loads(cli(env, "token", "issue", "--name", "bench", "--team", "bench-team",
                           "--scope", "llm:call", "--json"))["token"]  # fmt: skip
    # A price, so each LLM call's cost is computed and its spend counted, as in production.
    cli(env, "price", "set", MODEL, "--input", "2.5", "--output", "10")
    for name, prefix in ROUTES.items():
        provider = "none" if name == NULL_ROUTE else "openai"
        switch = "--no-include-stream-usage" if name.endswith("off") else "--include-stream-usage"
        cli(env, "route", "add", prefix, mock_url, "--scope", "llm:call",
            "--auth-header", "Authorization", "--auth-value-stdin",
            "--provider", provider, switch, stdin="Bearer sk-bench-upstream\n")  # fmt: skip
    return str(token)


@dataclass
class Cell:
    cpu_us: list[float] = field(default_factory=list)  # per call, one entry per round
    writer_cpu_us: list[float] = field(default_factory=list)  # of which the child processes
    wall_ms: list[float] = field(default_factory=list)
    body_bytes: int = 0
    body_sha256: str = ""


async def call_batch(
    session: Any, url: str, token: str, body: dict[str, Any], calls: int
) -> tuple[int, str]:
    """`calls` calls from CALLERS concurrent callers; (bytes, SHA-256) of one response body."""
    remaining = calls
    sample: list[bytes] = []

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.post(url, json=body, headers={"X-API-Key": token}) as response:
                payload = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: {response.status} {payload[:200]!r}")
                if not sample:
                    sample.append(payload)

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return len(sample[0]), hashlib.sha256(sample[0]).hexdigest()


async def measure_accounting(
    gateway_port: int, gateway_pid: int, token: str, rounds: int, calls: dict[str, int]
) -> dict[str, dict[str, Cell]]:
    import aiohttp

    requests = llm_requests()
    cells = {shape: {route: Cell() for route in ROUTES} for shape in requests}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for body in requests.values():  # warm-up: connections, caches, first spend read
            for prefix in ROUTES.values():
                url = f"http://127.0.0.1:{gateway_port}{prefix}/v1/chat/completions"
                await call_batch(session, url, token, body, 2 * CALLERS)
        await asyncio.sleep(SETTLE_S)
        for round_index in range(rounds):
            names = list(ROUTES)
            # Rotate the order each round, so drift in the machine's load spreads over all routes.
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for shape, body in requests.items():
                for name in order:
                    url = f"http://127.0.0.1:{gateway_port}{ROUTES[name]}/v1/chat/completions"
                    cpu_before = cpu_seconds([gateway_pid])
                    own_before = own_cpu_seconds(gateway_pid)
                    started = time.perf_counter()
                    size, digest = await call_batch(session, url, token, body, calls[shape])
                    wall_s = time.perf_counter() - started
                    await asyncio.sleep(SETTLE_S)
                    cpu_s = cpu_seconds([gateway_pid]) - cpu_before
                    own_s = own_cpu_seconds(gateway_pid) - own_before
                    cell = cells[shape][name]
                    cell.cpu_us.append(cpu_s / calls[shape] * 1e6)
                    cell.writer_cpu_us.append((cpu_s - own_s) / calls[shape] * 1e6)
                    cell.wall_ms.append(wall_s / calls[shape] * 1000 * CALLERS)
                    cell.body_bytes, cell.body_sha256 = size, digest
                    print(f"  round {round_index + 1} {shape:18s} {name:34s} "
                          f"{cell.cpu_us[-1]:9.0f} µs CPU/call", flush=True)  # fmt: skip
        async with session.get(
            f"http://127.0.0.1:{gateway_port}/_tokenmanager/usage", headers={"X-API-Key": token}
        ) as response:
            usage = await response.json()
    print(f"  self-service view after the run: {json.dumps(usage)[:300]}", flush=True)
    return cells


def run_accounting(work: Path, rounds: int, calls: dict[str, int]) -> dict[str, dict[str, Cell]]:
    env = base_env(work / "llm-data")
    mock_port, gateway_port = free_port(), free_port()
    token = prepare_llm_data(env, f"http://127.0.0.1:{mock_port}")
    mock = [*TOKENMANAGER, "mock-upstream", "--port", str(mock_port)]
    gateway = [*TOKENMANAGER, "gateway", "--workers", "1", "--port", str(gateway_port)]
    with process(mock, env, mock_port), process(gateway, env, gateway_port) as gateway_pid:
        return asyncio.run(measure_accounting(gateway_port, gateway_pid, token, rounds, calls))


# -- 2. non-LLM path, before and after -----------------------------------------------------------


@contextlib.contextmanager
def before_worktree(commit: str) -> Iterator[Path]:
    """The source tree at `commit`, checked out in a temporary git worktree (removed after)."""
    parent = Path(tempfile.mkdtemp(prefix="tm-before-"))
    path = parent / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path),
                    commit], check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                       check=False)  # fmt: skip
        shutil.rmtree(parent, ignore_errors=True)


@dataclass
class PathResult:
    before_us: list[float] = field(default_factory=list)
    after_us: list[float] = field(default_factory=list)
    before_rps: list[float] = field(default_factory=list)
    after_rps: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.after_us, self.before_us, strict=True)]


def run_non_llm(
    work: Path, before_src: Path, rounds: int, duration_s: int, concurrency: int
) -> PathResult:
    upstream_port, nginx_proxy_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    conf = write_nginx_conf(work, upstream_port, nginx_proxy_port)
    gateways: dict[str, tuple[dict[str, str], int, str]] = {}
    for name in ("before", "after"):
        env = base_env(work / f"{name}-data")
        if name == "before":
            env["PYTHONPATH"] = str(before_src)
            where = subprocess.run([*TOKENMANAGER[:1], "-c", "import tokenmanager; "
                                    "print(tokenmanager.__file__)"], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip()  # fmt: skip
            if not where.startswith(str(before_src)):
                raise RuntimeError(f"the before gateway would import {where}")
        token = prepare_gateway_data(Path(env["TOKENMANAGER_DATA_DIR"]), upstream_url, env)
        gateways[name] = (env, free_port(), token)
    result = PathResult()
    nginx = [nginx_binary(), "-c", str(conf), "-p", str(work), "-g", "daemon off;"]
    with ExitStack() as stack:
        stack.enter_context(process(nginx, base_env(work), upstream_port))
        pids = {
            name: stack.enter_context(
                process([*TOKENMANAGER, "gateway", "--workers", "1", "--port", str(port)], env,
                        port)
            )
            for name, (env, port, _) in gateways.items()
        }  # fmt: skip

        def url_headers(name: str) -> tuple[str, dict[str, str]]:
            _, port, token = gateways[name]
            return f"http://127.0.0.1:{port}/bench/v1/chat", {"X-API-Key": token}

        for name in gateways:
            run_wrk(*url_headers(name)[:1], concurrency, 2, url_headers(name)[1])  # warm-up
        for round_index in range(rounds):
            order = ["after", "before"] if round_index % 2 == 0 else ["before", "after"]
            for name in order:
                url, headers = url_headers(name)
                cpu_before = cpu_seconds([pids[name]])
                figures = run_wrk(url, concurrency, duration_s, headers)
                time.sleep(SETTLE_S)
                cpu_us = (cpu_seconds([pids[name]]) - cpu_before) / figures["requests"] * 1e6
                if figures["non_2xx"] or figures["socket_errors"]:
                    raise RuntimeError(f"{name}: {figures}")
                getattr(result, f"{name}_us").append(cpu_us)
                getattr(result, f"{name}_rps").append(figures["rps"])
                print(f"  round {round_index + 1} {name:6s} {figures['rps']:7.0f} req/s "
                      f"{cpu_us:6.0f} µs CPU/req", flush=True)  # fmt: skip
    return result


# -- 3. budget check -----------------------------------------------------------------------------


@dataclass
class MicroResult:
    verify_hit_us: list[float]
    check_store_us: list[float]
    check_redis_cpu_us: list[float]
    check_redis_wall_us: list[float]
    budgets: int


async def per_call(
    call: Callable[[], Any], calls: int, repeats: int
) -> tuple[list[float], list[float]]:
    """(CPU µs, wall µs) per awaited call, one figure per repeat."""
    cpu, wall = [], []
    for _ in range(repeats):
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await call()
        cpu.append((time.process_time() - cpu_started) / calls * 1e6)
        wall.append((time.perf_counter() - wall_started) / calls * 1e6)
    return cpu, wall


async def measure_budget_check(data_dir: Path, redis_url: str, token: str) -> MicroResult:
    from tokenmanager.changes import build_redis
    from tokenmanager.clock import utcnow
    from tokenmanager.composition import build_budget_guard, upstream_policy
    from tokenmanager.crypto import Keyring
    from tokenmanager.gateway.budgets import RedisLedger
    from tokenmanager.gateway.directory import Directory
    from tokenmanager.settings import load_secret_key, load_settings
    from tokenmanager.storage.database import Database

    settings = load_settings(data_dir=data_dir, redis_url=None)
    database = Database.from_url(settings.resolved_database_url)
    directory = Directory(
        database,
        Keyring(load_secret_key(settings)),
        upstream_policy(settings),
        poll_interval_s=settings.change_poll_interval_s,
    )
    redis = build_redis(redis_url)
    keys: list[str] = []
    try:
        verifier = directory.verifier
        record = (await verifier.verify(token)).record  # the miss that fills the cache
        assert record is not None
        assert len(record.budgets) == 2, record
        store_guard = build_budget_guard(settings, database, None)
        redis_guard = build_budget_guard(settings, database, redis)
        assert isinstance(redis_guard.ledger, RedisLedger)
        now = utcnow()
        for guard in (store_guard, redis_guard):  # first reads: the store, Redis seeded
            assert await guard.check(record.budgets, now) is None

        async def verify_hit() -> None:
            await verifier.verify(token)

        async def check_store() -> None:
            await store_guard.check(record.budgets, now)

        async def check_redis() -> None:
            await redis_guard.check(record.budgets, now)

        verify_cpu, _ = await per_call(verify_hit, 20_000, 5)
        store_cpu, _ = await per_call(check_store, 20_000, 5)
        redis_cpu, redis_wall = await per_call(check_redis, 1_000, 5)
        keys = [
            RedisLedger.redis_key(
                (
                    budget.scope,
                    budget.subject,
                    budget.period,
                    redis_guard.clock.start(budget.period, now),
                )
            )
            for budget in record.budgets
        ]
        return MicroResult(verify_cpu, store_cpu, redis_cpu, redis_wall, len(record.budgets))
    finally:
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await database.dispose()


def run_budget_check(work: Path, redis_url: str) -> MicroResult:
    env = base_env(work / "budget-data")
    cli(env, "migrate")
    cli(env, "team", "create", "budget-team", "--name", "Budget", "--budget-usd", "500")
    token = json.loads(cli(env, "token", "issue", "--name", "budget", "--team", "budget-team",
                           "--budget-usd", "5", "--budget-period", "day",
                           "--json"))["token"]  # fmt: skip
    return asyncio.run(measure_budget_check(work / "budget-data", redis_url, str(token)))


# -- the run and its report --------------------------------------------------------------------


@dataclass
class RunResult:
    started: str
    load_start: tuple[float, float, float]
    load_end: tuple[float, float, float]
    seconds: float
    cells: dict[str, dict[str, Cell]]
    path: PathResult
    micro: MicroResult


def run_once(args: argparse.Namespace, before_src: Path) -> RunResult:
    load_start = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="tm-llm-bench-"))
    try:
        print(f"1. accounting ({time.monotonic() - began:.0f} s)", flush=True)
        calls = {"SSE, 1,000 chunks": args.sse_calls, "JSON, 64 KiB": args.json_calls}
        cells = run_accounting(work, args.rounds, calls)
        print(f"2. non-LLM path, before and after ({time.monotonic() - began:.0f} s)", flush=True)
        path = run_non_llm(work, before_src, args.path_rounds, args.path_duration, 8)
        print(f"3. budget check ({time.monotonic() - began:.0f} s)", flush=True)
        micro = run_budget_check(work, args.redis_url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return RunResult(
        started, load_start, os.getloadavg(), time.monotonic() - began, cells, path, micro
    )


def load(values: tuple[float, float, float]) -> str:
    return " ".join(f"{value:.2f}" for value in values)


def report_run(number: int, run: RunResult, args: argparse.Namespace) -> list[str]:
    lines = [
        f"## Run {number}: {run.started}",
        "",
        f"{os.cpu_count()} cores, load average {load(run.load_start)} at the start and "
        f"{load(run.load_end)} at the end (other engineers' work shares the machine); "
        f"{run.seconds:.0f} s in all.",
        "",
        f"### 1. Accounting: gateway CPU per call ({args.rounds} interleaved rounds; "
        f"{args.sse_calls} SSE / {args.json_calls} JSON calls per cell per round, "
        f"{CALLERS} concurrent callers)",
        "",
        "| response | route | CPU µs/call (median) | rounds | x null (median) | "
        "x null per round | of which child processes µs/call | client bytes | wall ms/call |",
        "|---|---|---:|---|---:|---|---:|---:|---:|",
    ]
    for shape, by_route in run.cells.items():
        base = by_route[NULL_ROUTE]
        for name, cell in by_route.items():
            ratios = [a / b for a, b in zip(cell.cpu_us, base.cpu_us, strict=True)]
            ratio = statistics.median(cell.cpu_us) / statistics.median(base.cpu_us)
            lines.append(
                f"| {shape} | {name} | {statistics.median(cell.cpu_us):.0f} "
                f"| {', '.join(f'{v:.0f}' for v in cell.cpu_us)} | {ratio:.3f} "
                f"| {spread(ratios)} | {statistics.median(cell.writer_cpu_us):.0f} "
                f"| {cell.body_bytes} "
                f"| {statistics.median(cell.wall_ms):.1f} |"
            )
        identical = len({cell.body_sha256 for cell in by_route.values()}) == 1
        lines.append(
            f"| {shape} | client bodies identical on all three routes | {identical} | | | | | | |"
        )
    path = run.path
    lines += [
        "",
        f"### 2. Non-LLM route: gateway now / gateway at {args.before_commit} "
        f"(wrk -t1 -c8, {args.path_duration} s per cell, {args.path_rounds} alternating rounds)",
        "",
        "| round | before µs/req | now µs/req | now / before | before req/s | now req/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for index, ratio in enumerate(path.ratios):
        lines.append(
            f"| {index + 1} | {path.before_us[index]:.0f} | {path.after_us[index]:.0f} "
            f"| {ratio:.3f} | {path.before_rps[index]:.0f} | {path.after_rps[index]:.0f} |"
        )
    lines.append(
        f"| median | {statistics.median(path.before_us):.0f} "
        f"| {statistics.median(path.after_us):.0f} "
        f"| {statistics.median(path.ratios):.3f} (spread {spread(path.ratios)}) | | |"
    )
    micro = run.micro
    median = statistics.median
    lines += [
        "",
        f"### 3. Budget check, in process ({micro.budgets} budgets: the token's daily and its "
        "team's monthly; 5 repeats each)",
        "",
        "| operation | CPU µs/call (median) | repeats | wall µs/call (median) |",
        "|---|---:|---|---:|",
        f"| baseline: `TokenVerifier.verify`, cache hit | {median(micro.verify_hit_us):.2f} "
        f"| {', '.join(f'{v:.2f}' for v in micro.verify_hit_us)} | |",
        f"| `BudgetGuard.check`, `StoreLedger`, spend already read "
        f"| {median(micro.check_store_us):.2f} "
        f"| {', '.join(f'{v:.2f}' for v in micro.check_store_us)} | |",
        f"| `BudgetGuard.check`, `RedisLedger` (one MGET to 127.0.0.1:6379) "
        f"| {median(micro.check_redis_cpu_us):.1f} "
        f"| {', '.join(f'{v:.1f}' for v in micro.check_redis_cpu_us)} "
        f"| {median(micro.check_redis_wall_us):.1f} |",
        "",
        "Store check / verify hit: "
        f"{median(micro.check_store_us) / median(micro.verify_hit_us):.2f}; "
        "Redis check / store check (CPU): "
        f"{median(micro.check_redis_cpu_us) / median(micro.check_store_us):.1f}.",
        "",
    ]
    return lines


def write_report(out: Path, runs: list[RunResult], args: argparse.Namespace) -> None:
    lines = [
        "# LLM accounting benchmark (issue 13, Speed)",
        "",
        "```bash",
        " ".join([".venv/bin/python", *(shlex.quote(arg) for arg in sys.argv)]),
        "```",
        "",
        f"Method: `bench/README.md`. {len(runs)} runs of the whole benchmark, one after the "
        "other; every ratio is from measurements in the same run.",
        "",
        "## Summary (targets: accounting ≤ 1.15x null; non-LLM now ≤ 1.02x before; "
        "budget check ≤ 20 µs CPU)",
        "",
        "| figure | target | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " |",
        "|---|---:|" + "---:|" * len(runs),
    ]
    median = statistics.median
    for shape in runs[0].cells:
        for name in ROUTES:
            if name == NULL_ROUTE:
                continue
            values = [
                median(run.cells[shape][name].cpu_us) / median(run.cells[shape][NULL_ROUTE].cpu_us)
                for run in runs
            ]
            lines.append(
                f"| {shape}, {name} / null (CPU) | ≤ 1.15 | "
                + " | ".join(f"{value:.3f}" for value in values)
                + " |"
            )
    lines.append(
        "| non-LLM route, now / before (CPU, median of rounds) | ≤ 1.02 | "
        + " | ".join(f"{median(run.path.ratios):.3f} ({spread(run.path.ratios)})" for run in runs)
        + " |"
    )
    lines.append(
        "| budget check, StoreLedger (CPU µs) | ≤ 20 | "
        + " | ".join(f"{median(run.micro.check_store_us):.2f}" for run in runs)
        + " |"
    )
    lines.append(
        "| budget check, RedisLedger (CPU µs / wall µs) | report | "
        + " | ".join(
            f"{median(run.micro.check_redis_cpu_us):.0f} / "
            f"{median(run.micro.check_redis_wall_us):.0f}"
            for run in runs
        )
        + " |"
    )
    lines.append("")
    for number, run in enumerate(runs, 1):
        lines += report_run(number, run, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2, help="whole-benchmark runs (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="accounting rounds (default 3)")
    parser.add_argument("--sse-calls", type=int, default=16, help="SSE calls per cell per round")
    parser.add_argument("--json-calls", type=int, default=100, help="JSON calls per cell per round")
    parser.add_argument("--path-rounds", type=int, default=6, help="before/now rounds (default 6)")
    parser.add_argument("--path-duration", type=int, default=3, help="seconds per wrk cell")
    parser.add_argument("--before-commit", default="3efa94b", help="the gateway before issue 13")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/llm.md")
    args = parser.parse_args()
    # Stopped with SIGTERM, the servers, the temporary worktree and the data dirs are cleaned up.
    signal.signal(signal.SIGTERM, lambda _signal, _frame: sys.exit(1))
    ensure_tools()
    with before_worktree(args.before_commit) as before:
        runs = [run_once(args, before / "src") for _ in range(args.runs)]
    write_report(args.out, runs, args)


if __name__ == "__main__":
    main()
