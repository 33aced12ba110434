"""The gateway's ASGI application. The pipeline, in order (`_pipeline`):

    check framing -> extract the token -> verify it -> match the route -> check scopes
    -> rate limit -> rewrite headers and URL (strip, then inject) -> stream to the upstream
    -> record usage (always, also for refusals; after the response, off the request's path)

Refusals use the control plane's error shape. `/healthz` and `/metrics` are the gateway's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import yarl

from tokenmanager.clock import utcnow
from tokenmanager.gateway import rewriting
from tokenmanager.gateway.budgets import BudgetGuard, Exceeded
from tokenmanager.gateway.directory import Directory, GatewayRoute
from tokenmanager.gateway.metrics import GatewayMetrics
from tokenmanager.gateway.ratelimit import Limit, RateLimiter, build_limits, retry_after_header
from tokenmanager.gateway.selfservice import SelfService
from tokenmanager.gateway.upstream import build_upstream_session
from tokenmanager.gateway.verification import (
    STATUS_ANSWERS,
    TokenRecord,
    Verification,
    VerifyStatus,
)
from tokenmanager.llm.meter import ResponseMeter
from tokenmanager.llm.requests import PreparedRequest, prepare_request
from tokenmanager.pricing.money import format_micro_usd
from tokenmanager.ssrf import ForbiddenUpstreamError, IPNetwork, UpstreamPolicy
from tokenmanager.usage.events import UsageEvent
from tokenmanager.usage.recorder import UsageRecorder
from tokenmanager.usage.spool import Spool

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

METRICS_SYNC_INTERVAL_S = 1.0
# How long a call runs before the gateway starts watching for the client going away; a client
# that leaves is still noticed well within a second.
WATCHER_DELAY_S = 0.05
MAX_CACHED_LIMITS = 100_000
SELF_SERVICE_PATH = "/_tokenmanager/usage"
_PERIOD_ADJECTIVES = {"day": "daily", "month": "monthly"}
_ERROR_CODES = {400: "bad_request", 404: "not_found", 413: "payload_too_large",
                431: "request_header_fields_too_large", 499: "client_closed_request",
                502: "bad_gateway", 504: "gateway_timeout"}  # fmt: skip


class _ClientGoneError(Exception):
    """The client disconnected while its request body was still arriving."""


class _BodyTooLargeError(Exception):
    pass


class ResponseAbortedError(Exception):
    """Raised to the server after the upstream broke off a response whose headers were already
    sent: the server then drops the connection, and the client sees a broken response rather
    than a silently truncated one. Already recorded, so the server need not log it."""


class _QuietAbortFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseAbortedError))


class GatewayApp:
    def __init__(
        self,
        *,
        directory: Directory,
        recorder: UsageRecorder,
        spool: Spool,
        limiter: RateLimiter,
        upstream_policy: UpstreamPolicy,
        trusted_proxies: tuple[IPNetwork, ...],
        max_body_bytes: int,
        max_header_bytes: int,
        budgets: BudgetGuard,
        self_service: SelfService,
        default_rate_limits: tuple[int | None, int | None] = (None, None),
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.directory = directory
        self.recorder = recorder
        self._spool = spool
        self._limiter = limiter
        self._policy = upstream_policy
        self._trusted_proxies = trusted_proxies
        self._max_body_bytes = max_body_bytes
        self._max_header_bytes = max_header_bytes
        self._default_rate_limits = default_rate_limits
        self.budgets = budgets
        self._self_service = self_service
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self.metrics = GatewayMetrics()
        self._session: aiohttp.ClientSession | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        # Per token: the record its limits were built from, and the limits (built once, not
        # per call; a changed token arrives as a new record).
        self._limits: dict[int, tuple[TokenRecord, tuple[Limit, ...]]] = {}
        # Set by the server's factory (a process of its own, not a test's shared interpreter).
        self.freeze_gc_after_startup = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        server_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _QuietAbortFilter) for f in server_log.filters):
            server_log.addFilter(_QuietAbortFilter())
        if self._on_startup is not None:
            await self._on_startup()
        self._session = build_upstream_session(self._policy)
        await self.directory.start()
        await self.budgets.ledger.start()
        await self.recorder.start()
        self._metrics_task = asyncio.create_task(self._sync_metrics_loop(), name="gateway-metrics")
        if self.freeze_gc_after_startup:
            # The ~100k objects of imports and startup live as long as the process; frozen,
            # the collector stops walking them in every full collection, which otherwise
            # stalls the event loop for 100-300 ms every few seconds under load.
            gc.collect()
            gc.freeze()

    async def shutdown(self) -> None:
        """In-flight requests are finished by the server first; then the queue is drained."""
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metrics_task
        await self.directory.stop()
        await self.recorder.stop()
        await self.budgets.ledger.stop()
        if self._session is not None:
            await self._session.close()
        if self._on_shutdown is not None:
            await self._on_shutdown()

    async def _sync_metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(METRICS_SYNC_INTERVAL_S)
            await self._sync_metrics()

    async def _sync_metrics(self) -> None:
        spool_bytes = await asyncio.to_thread(self._spool.size_bytes)
        self.metrics.sync(self.recorder, self.directory.verifier, self._limiter, spool_bytes)

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/healthz":
                await _send_json(send, 200, {"status": "ok"})
            elif path == SELF_SERVICE_PATH:
                await self._answer_self_service(scope, send)
            elif path == "/metrics":
                await self._sync_metrics()
                await _send_bytes(send, 200, self.metrics.render(), b"text/plain; version=0.0.4")
            else:
                await self._handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    logger.error("gateway failed to start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = scope["headers"]
        peer = scope["client"][0] if scope.get("client") else None
        event = UsageEvent(
            token_hash="",
            route_path=None,
            used_at=utcnow(),
            response_status=None,
            response_time_ms=None,
            ip_address=rewriting.client_address(
                peer, rewriting.header_value(headers, b"x-forwarded-for"), self._trusted_proxies
            ),
            user_agent=rewriting.header_value(headers, b"user-agent"),
            request_method=scope["method"][:10],
            bytes_in=0,
            bytes_out=0,
        )
        try:
            await self._pipeline(scope, receive, send, event, started)
        finally:
            elapsed_s = time.perf_counter() - started
            event.response_time_ms = round(elapsed_s * 1000)
            self.metrics.observe_request(event.route_path, event.response_status, elapsed_s)
            self.budgets.charge(event)
            self.recorder.record(event)

    async def _pipeline(
        self, scope: Scope, receive: Receive, send: Send, event: UsageEvent, started: float
    ) -> None:
        headers = scope["headers"]
        try:
            declared_length = rewriting.check_framing(headers, self._max_header_bytes)
        except OverflowError:
            return await self._refuse(send, event, 431, "request headers are too large")
        except rewriting.FramingError as exc:
            return await self._refuse(send, event, 400, f"malformed request framing: {exc}")
        if declared_length is not None and declared_length > self._max_body_bytes:
            return await self._refuse(send, event, 413, "request body is too large")

        verification = await self.directory.verifier.verify(rewriting.extract_token(headers))
        event.token_hash = verification.token_hash
        if verification.record is not None:
            event.token_id = verification.record.token_id
            event.team_id = verification.record.team_id
        if verification.status is not VerifyStatus.VALID:
            return await self._refuse_verification(send, event, verification)
        record = verification.record
        assert record is not None

        route = self.directory.match(scope["path"])
        if route is None or not route.is_enabled:
            return await self._refuse(send, event, 404, "no route for this path")
        event.route_path = route.path_prefix

        if not record.has_scopes(route.required_scopes):
            return await self._refuse_verification(
                send, event, Verification(VerifyStatus.INSUFFICIENT_SCOPE, event.token_hash)
            )

        limits = self._limits_for(record)
        if limits:
            retry_after_s = await self._limiter.hit(limits)
            if retry_after_s is not None:
                return await self._refuse_verification(
                    send,
                    event,
                    Verification(VerifyStatus.RATE_LIMITED, event.token_hash),
                    extra_headers=[(b"retry-after", retry_after_header(retry_after_s).encode())],
                )

        if record.budgets:
            exceeded = await self.budgets.check(record.budgets, event.used_at)
            if exceeded is not None:
                return await self._refuse_budget(send, event, exceeded)

        try:
            url = rewriting.build_upstream_url(
                route.upstream_url,
                route.path_prefix,
                scope["path"],
                scope.get("raw_path"),
                scope.get("query_string", b""),
                route.credential,
            )
        except rewriting.UnsafePathError:
            return await self._refuse(send, event, 400, "path segments '.' and '..' are refused")
        upstream_headers = rewriting.build_upstream_headers(headers, route.credential)
        if route.provider is not None:
            # The accounting reads the response: it must arrive uncompressed (any client
            # accepts identity), and the request body is read whole, then rewritten maybe.
            upstream_headers = [
                (name, value)
                for name, value in upstream_headers
                if name.lower() != "accept-encoding"
            ]
            upstream_headers.append(("Accept-Encoding", "identity"))
        elif declared_length:
            # A known length is passed on, so the upstream gets a plain (not chunked) body.
            upstream_headers.append(("Content-Length", str(declared_length)))
        has_body = bool(declared_length) or any(name == b"transfer-encoding" for name, _ in headers)
        await self._forward(
            scope, receive, send, event, route, url, upstream_headers, has_body, started
        )

    def _limits_for(self, record: TokenRecord) -> tuple[Limit, ...]:
        cached = self._limits.get(record.token_id)
        if cached is not None and cached[0] is record:
            return cached[1]
        per_s, per_min = self._default_rate_limits
        limits = build_limits(
            record.token_id,
            record.team_id,
            record.rate_limit_per_s or per_s,
            record.rate_limit_per_min or per_min,
            record.team_rate_limit_per_s,
            record.team_rate_limit_per_min,
        )
        if len(self._limits) >= MAX_CACHED_LIMITS:
            self._limits.clear()
        self._limits[record.token_id] = (record, limits)
        return limits

    # -- forwarding --------------------------------------------------------------------------

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        event: UsageEvent,
        route: GatewayRoute,
        url: str,
        upstream_headers: list[tuple[str, str]],
        has_body: bool,
        started: float,
    ) -> None:
        assert self._session is not None
        body_done = asyncio.Event()
        request_task = asyncio.current_task()
        assert request_task is not None
        client_gone = False
        # aiohttp reads the body in a task of its own and wraps what it raises, so the reason
        # an upload stopped travels in this variable rather than in the exception.
        body_failure: Exception | None = None

        async def request_body() -> AsyncIterator[bytes]:
            nonlocal body_failure
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    body_failure = _ClientGoneError()
                    raise body_failure
                chunk = message.get("body", b"")
                event.bytes_in = (event.bytes_in or 0) + len(chunk)
                if event.bytes_in > self._max_body_bytes:
                    body_failure = _BodyTooLargeError()
                    raise body_failure
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    body_done.set()
                    return

        async def watch_for_disconnect() -> None:
            nonlocal client_gone
            if not has_body:
                await receive()  # the empty request body
                body_done.set()
            await body_done.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            client_gone = True
            request_task.cancel()  # stops the upstream exchange wherever it is

        # Most calls finish within milliseconds, so the watcher (a task, which costs more than
        # the rest of the pipeline) starts only once a call has run for WATCHER_DELAY_S.
        watcher: asyncio.Task[None] | None = None

        def start_watcher() -> None:
            nonlocal watcher
            watcher = asyncio.create_task(watch_for_disconnect())

        watcher_timer = asyncio.get_running_loop().call_later(WATCHER_DELAY_S, start_watcher)
        response_started = False
        prepared: PreparedRequest | None = None
        meter: ResponseMeter | None = None
        try:
            if route.forbidden_reason is not None:
                raise ForbiddenUpstreamError(route.forbidden_reason)
            data: bytes | AsyncIterator[bytes] | None = None
            if has_body and route.provider is None:
                data = request_body()
            elif has_body:
                assert route.provider is not None
                body = b"".join([chunk async for chunk in request_body()])
                prepared = prepare_request(
                    route.provider,
                    scope["path"],
                    body,
                    add_stream_usage=route.include_stream_usage,
                )
                data = prepared.body
                upstream_headers.append(("Content-Length", str(len(data))))
            async with self._session.request(
                scope["method"],
                yarl.URL(url, encoded=True),
                headers=upstream_headers,
                data=data,
                allow_redirects=False,
                timeout=route.timeout,
            ) as response:
                event.ttfb_ms = round((time.perf_counter() - started) * 1000)
                event.response_status = response.status
                response_headers = rewriting.build_response_headers(response.raw_headers)
                if prepared is not None:
                    assert route.provider is not None
                    meter = ResponseMeter(
                        route.provider,
                        prepared,
                        status=response.status,
                        content_type=response.headers.get("Content-Type"),
                    )
                    if prepared.usage_option_added:
                        # The relayed stream loses the usage the client did not ask for.
                        response_headers = [
                            (name, value)
                            for name, value in response_headers
                            if name.lower() != b"content-length"
                        ]
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": response_headers,
                    }
                )
                response_started = True
                async for chunk in response.content.iter_any():
                    relayed = meter.feed(chunk) if meter is not None else chunk
                    if relayed:
                        await send(
                            {"type": "http.response.body", "body": relayed, "more_body": True}
                        )
                        event.bytes_out = (event.bytes_out or 0) + len(relayed)
                if meter is not None:
                    rest = meter.flush()
                    if rest:
                        await send({"type": "http.response.body", "body": rest, "more_body": True})
                        event.bytes_out = (event.bytes_out or 0) + len(rest)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not client_gone:
                raise
            request_task.uncancel()
            _fail(event, 499, "client_disconnect", "client closed the connection")
        except Exception as exc:
            if isinstance(body_failure, _ClientGoneError):
                _fail(event, 499, "client_disconnect", "client closed the connection during upload")
                return
            if isinstance(body_failure, _BodyTooLargeError):
                await self._refuse(send, event, 413, "request body is too large")
                return
            status, kind, message = _classify_upstream_failure(exc, response_started)
            if response_started:
                _fail(event, status, kind, message)
                raise ResponseAbortedError(kind) from exc
            await self._refuse(send, event, status, message, failure_kind=kind)
        finally:
            watcher_timer.cancel()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if prepared is not None:
                self._account(event, prepared, meter)

    def _account(
        self, event: UsageEvent, prepared: PreparedRequest, meter: ResponseMeter | None
    ) -> None:
        """Model, tokens and cost of an LLM call, from what the meter saw; a call that never
        reached an upstream answer used nothing the upstream bills."""
        if meter is None:
            event.model = prepared.requested_model
            return
        usage = meter.result()
        event.model = usage.model
        event.prompt_tokens = usage.prompt_tokens
        event.completion_tokens = usage.completion_tokens
        event.cached_prompt_tokens = usage.cached_prompt_tokens
        event.reasoning_tokens = usage.reasoning_tokens
        event.usage_source = usage.usage_source.value
        event.cost_pusd = self.directory.prices.cost_for(usage)

    # -- self-service ------------------------------------------------------------------------

    async def _answer_self_service(self, scope: Scope, send: Send) -> None:
        """A token holder's own usage, read with the token itself (no admin account)."""
        if scope["method"] not in ("GET", "HEAD"):
            await _send_json(
                send, 405, _error_body(405, "method_not_allowed", "use GET"), [(b"allow", b"GET")]
            )
            return
        verification = await self.directory.verifier.verify(
            rewriting.extract_token(scope["headers"])
        )
        if verification.status is not VerifyStatus.VALID or verification.record is None:
            event = UsageEvent("", None, utcnow(), None, None)
            await self._refuse_verification(send, event, verification)
            return
        try:
            summary = await self._self_service.read(verification.record, utcnow())
        except Exception as exc:  # noqa: BLE001 - the store is down: say so, briefly
            logger.warning("self-service usage unavailable (%s)", type(exc).__name__)
            await _send_json(
                send, 503, _error_body(503, "unavailable", "usage is unavailable right now")
            )
            return
        await _send_json(send, 200, summary)

    # -- refusals ----------------------------------------------------------------------------

    async def _refuse_budget(self, send: Send, event: UsageEvent, exceeded: Exceeded) -> None:
        budget = exceeded.budget
        renews_at = exceeded.period_end.astimezone(self.budgets.clock.zone)
        message = (
            f"the {budget.scope}'s {_PERIOD_ADJECTIVES[budget.period]} budget of "
            f"{format_micro_usd(budget.limit_micro_usd)} USD is spent; "
            f"it renews at {renews_at.isoformat()}"
        )
        event.response_status = 429
        event.failure_kind = "budget_exceeded"
        event.error_message = message
        retry_after_s = max(1, math.ceil((exceeded.period_end - utcnow()).total_seconds()))
        await _send_json(
            send,
            429,
            _error_body(429, "budget_exceeded", message),
            [(b"retry-after", str(retry_after_s).encode())],
        )

    async def _refuse_verification(
        self,
        send: Send,
        event: UsageEvent,
        verification: Verification,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        status, code, message = STATUS_ANSWERS[verification.status]
        event.failure_kind = verification.status.value
        event.response_status = status
        event.error_message = message
        headers = list(extra_headers or [])
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="tokenmanager"'))
        await _send_json(send, status, _error_body(status, code, message), headers)

    async def _refuse(
        self,
        send: Send,
        event: UsageEvent,
        status: int,
        message: str,
        *,
        failure_kind: str | None = None,
    ) -> None:
        event.response_status = status
        event.error_message = message
        event.failure_kind = failure_kind or _ERROR_CODES.get(status, "refused")
        await _send_json(
            send, status, _error_body(status, _ERROR_CODES.get(status, "error"), message)
        )


def _fail(event: UsageEvent, status: int, kind: str, message: str) -> None:
    event.response_status = status
    event.failure_kind = kind
    event.error_message = message


def _classify_upstream_failure(exc: Exception, response_started: bool) -> tuple[int, str, str]:
    """(status, failure kind, message) for an exception from the upstream exchange."""
    if isinstance(exc, ForbiddenUpstreamError) or (
        isinstance(exc, aiohttp.ClientConnectorError)
        and isinstance(exc.os_error, ForbiddenUpstreamError)
    ):
        return 502, "upstream_forbidden", "the upstream's address is not allowed"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return 504, "connect_timeout", "timed out connecting to the upstream"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return 504, "read_timeout", "the upstream stopped sending"
    if isinstance(exc, TimeoutError):
        return 504, "timeout", "the upstream did not answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return 502, "connect_error", "could not connect to the upstream"
    if response_started or isinstance(exc, aiohttp.ClientPayloadError):
        return 502, "upstream_reset", "the upstream broke off the response"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return 502, "upstream_disconnected", "the upstream closed the connection"
    logger.warning("unexpected upstream failure: %s", type(exc).__name__)
    return 502, "upstream_error", "the upstream exchange failed"


def _error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"status": status, "code": code, "message": message}}).encode()


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, Any] | bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    await _send_bytes(send, status, payload, b"application/json", headers)


async def _send_bytes(
    send: Send,
    status: int,
    payload: bytes,
    content_type: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    response_headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(payload)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
