"""Baseline: the barest Python pass-through proxy we can write with the gateway's own stack
(uvicorn + httptools + uvloop, aiohttp client, pure ASGI) and none of its features: no auth,
no scopes, no rate limit, no header rewriting beyond the minimum, no recording.

    python bench/passthrough.py --port 9101 --upstream http://127.0.0.1:9100
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn
import yarl

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"host", b"content-length"}
# As the gateway does: the upstream's Content-Length is relayed (uvicorn then sends the body as
# is, not chunked: one write less per response, so this floor is no slower than it needs to be),
# its Server and Date are not (uvicorn sets Date).
RESPONSE_DROPPED = (HOP_BY_HOP - {b"content-length"}) | {b"server", b"date"}


class PassThrough:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=1000), auto_decompress=False
                    )
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    assert self.session is not None
                    await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.session is not None
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        url = self.upstream + scope["raw_path"].decode()
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        async with self.session.request(
            scope["method"], yarl.URL(url, encoded=True), headers=headers, allow_redirects=False
        ) as response:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [
                        (k.lower(), v)
                        for k, v in response.raw_headers
                        if k.lower() not in RESPONSE_DROPPED
                    ],
                }
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        PassThrough(args.upstream.rstrip("/")),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # as the gateway: no X-Forwarded-For middleware
    )


if __name__ == "__main__":
    main()
