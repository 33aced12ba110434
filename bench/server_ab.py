"""A/B of the HTTP server under the gateway: uvicorn (`tokenmanager gateway --workers 1`) against
granian (one worker, uvloop, the same app factory), same data and upstream, alternating rounds
of wrk at c=16. CPU per request counts each server's processes and their children.

    .venv/bin/pip install granian        # not a dependency: only this comparison uses it
    .venv/bin/python bench/server_ab.py [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_bench as gb  # the sibling scripts' helpers
import serve_bench as sb

GRANIAN = Path(sys.executable).with_name("granian")
FACTORY = "tokenmanager.gateway.server:create_gateway_from_environment"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk cell")
    args = parser.parse_args()
    if not GRANIAN.exists():
        sys.exit(f"{GRANIAN} not found: pip install granian")
    gb.ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="tm-server-ab-"))
    ports = {name: gb.free_port() for name in ("upstream", "nginx", "uvicorn", "granian")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOKENMANAGER_")},
        "TOKENMANAGER_DATA_DIR": str(work / "data"),
        "TOKENMANAGER_UPSTREAM_ALLOW": "127.0.0.0/8",
        "TOKENMANAGER_RATE_LIMIT_PER_S": "1000000",
        "TOKENMANAGER_LOG_LEVEL": "WARNING",
    }
    conf = gb.write_nginx_conf(work, ports["upstream"], ports["nginx"])
    token = gb.prepare_gateway_data(work / "data", f"http://127.0.0.1:{ports['upstream']}", env)
    commands = {
        "upstream": [gb.nginx_binary(), "-c", str(conf), "-p", str(work), "-g", "daemon off;"],
        "uvicorn": [*gb.TOKENMANAGER, "gateway", "--port", str(ports["uvicorn"]),
                    "--workers", "1"],
        "granian": [str(GRANIAN), "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                    "--port", str(ports["granian"]), "--workers", "1", "--loop", "uvloop",
                    "--no-ws", "--log-level", "warning", FACTORY],
    }  # fmt: skip
    headers = {"X-API-Key": token}
    with ExitStack() as stack:
        processes = {}
        for name, command in commands.items():
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
            stack.callback(lambda p=process: (p.terminate(), p.wait(30)))
            processes[name] = process
        for name in commands:
            gb.wait_for_port(ports[name], 60)
        time.sleep(2)
        for name in ("uvicorn", "granian"):
            gb.run_wrk(f"http://127.0.0.1:{ports[name]}/bench/v1/chat", 16, 2, headers)
        print(f"load average {os.getloadavg()}")
        for round_number in range(1, args.rounds + 1):
            for name in ("uvicorn", "granian"):
                pid = processes[name].pid
                cell = sb.wrk_cell(
                    f"http://127.0.0.1:{ports[name]}/bench/v1/chat",
                    args.duration,
                    headers,
                    lambda pid=pid: sb.tree(pid),
                )
                print(f"round {round_number} {name}: {cell['rps']:.0f} req/s "
                      f"p50 {cell['p50_ms']:.2f} ms p99 {cell['p99_ms']:.2f} ms "
                      f"CPU {cell['cpu_us_per_request']:.0f} µs/req "
                      f"non-2xx {cell['non_2xx']}", flush=True)  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
