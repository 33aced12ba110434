// Token Manager's edge gateway: the Python gateway's pipeline (tokenmanager/gateway/app.py) as a
// Cloudflare Worker, fed by the control plane through Workers KV (`tokenmanager edge sync`):
//
//   extract the token -> checksum pre-check -> SHA-256 lookup in KV -> match the route
//   -> check scopes -> rewrite headers and URL (strip, then inject) -> stream to the upstream
//   -> record usage (always, also for refusals; after the response, via Queue or waitUntil)
//
// KV keys: `token:<sha256 hex>` (one record per current or rotated-out hash) and `config`
// (the routes, with credentials sealed under EDGE_KEY, and the imported tokens' hashes).

import { hasScopes, matchRoute } from "./routing.js";
import {
  buildResponseHeaders,
  buildUpstreamHeaders,
  buildUpstreamUrl,
  extractToken,
  UnsafePathError,
} from "./rewriting.js";
import { decryptSecret } from "./secrets.js";
import { hashToken, hasValidChecksum } from "./tokens.js";
import { addLlmUsage, buildEvent, consumeUsage, report, stats } from "./usage.js";

const UNAUTHORIZED = [401, "unauthorized", "missing or invalid API token"];
// The Python gateway's STATUS_ANSWERS: unknown, revoked, expired and malformed look the same.
export const STATUS_ANSWERS = {
  not_found: UNAUTHORIZED,
  expired: UNAUTHORIZED,
  revoked: UNAUTHORIZED,
  insufficient_scope: [403, "forbidden", "the token lacks a scope this route needs"],
  rate_limited: [429, "too_many_requests", "rate limit exceeded"],
  unavailable: [503, "unavailable", "token verification is unavailable"],
};
const ERROR_CODES = {
  400: "bad_request", 404: "not_found", 413: "payload_too_large", 499: "client_closed_request",
  502: "bad_gateway", 504: "gateway_timeout",
};
const DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024;
const DEFAULT_CONFIG_CACHE_MS = 1000;
const DEFAULT_TOTAL_TIMEOUT_S = 300;

export function errorBody(status, code, message) {
  return JSON.stringify({ error: { status, code, message } });
}

function jsonResponse(status, body, extraHeaders = {}) {
  return new Response(body, {
    status,
    headers: { "content-type": "application/json", ...extraHeaders },
  });
}

// The routes change rarely and are read on every call: each isolate keeps them briefly.
let cachedConfig = null;
let cachedConfigUntilMs = 0;

async function readConfig(env) {
  const now = Date.now();
  if (cachedConfig !== null && now < cachedConfigUntilMs) return cachedConfig;
  let config;
  try {
    config = (await env.TOKENS.get("config", "json")) || { routes: [], imported_hashes: [] };
  } catch (error) {
    if (cachedConfig === null) throw error;
    return cachedConfig; // KV hiccup: the last routes this isolate read keep serving
  }
  config.imported = new Set(config.imported_hashes || []);
  cachedConfig = config;
  cachedConfigUntilMs = now + Number(env.CONFIG_CACHE_MS ?? DEFAULT_CONFIG_CACHE_MS);
  return config;
}

/** Forget the cached routes (tests; a fresh isolate starts empty anyway). */
export function resetConfigCache() {
  cachedConfig = null;
  cachedConfigUntilMs = 0;
}

/** (status, token hash, record): the Python TokenVerifier's answer, KV standing in for the store. */
export async function verifyToken(env, tokenSecret, config) {
  if (!tokenSecret) return { status: "not_found", tokenHash: "", record: null };
  const tokenHash = await hashToken(tokenSecret);
  if (!hasValidChecksum(tokenSecret) && !config.imported.has(tokenHash)) {
    return { status: "not_found", tokenHash: "", record: null }; // a typo or a guess: no lookup
  }
  let record;
  try {
    record = await env.TOKENS.get(`token:${tokenHash}`, "json");
  } catch (error) {
    console.error(`KV read failed: ${error}`);
    return { status: "unavailable", tokenHash, record: null };
  }
  if (record === null) return { status: "not_found", tokenHash, record: null };
  if (record.revoked_at) return { status: "revoked", tokenHash, record };
  if (record.expires_at && Date.parse(record.expires_at) <= Date.now()) {
    return { status: "expired", tokenHash, record };
  }
  return { status: "valid", tokenHash, record };
}

function refuse(event, status, message, failureKind) {
  event.response_status = status;
  event.error_message = message;
  event.failure_kind = failureKind ?? ERROR_CODES[status] ?? "refused";
  return jsonResponse(status, errorBody(status, ERROR_CODES[status] ?? "error", message));
}

function refuseVerification(event, verifyStatus) {
  const [status, code, message] = STATUS_ANSWERS[verifyStatus];
  event.failure_kind = verifyStatus;
  event.response_status = status;
  event.error_message = message;
  const headers = status === 401 ? { "www-authenticate": 'Bearer realm="tokenmanager"' } : {};
  return jsonResponse(status, errorBody(status, code, message), headers);
}

function decodedPath(rawPath) {
  try {
    return decodeURIComponent(rawPath);
  } catch {
    return rawPath;
  }
}

async function pipeline(request, env, ctx, url, event, startedMs) {
  const declared = request.headers.get("content-length");
  const maxBodyBytes = Number(env.MAX_BODY_BYTES ?? DEFAULT_MAX_BODY_BYTES);
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > maxBodyBytes) {
    return { response: refuse(event, 413, "request body is too large") };
  }

  let config;
  try {
    config = await readConfig(env);
  } catch (error) {
    // KV unreachable and no routes in this isolate yet: the Python gateway's UNAVAILABLE.
    console.error(`KV read of the routes failed: ${error}`);
    return { response: refuseVerification(event, "unavailable") };
  }
  const verification = await verifyToken(env, extractToken(request.headers), config);
  event.token_hash = verification.tokenHash;
  if (verification.status !== "valid") {
    return { response: refuseVerification(event, verification.status) };
  }
  const token = verification.record;

  const path = decodedPath(url.pathname);
  const route = matchRoute(config.routes, path);
  if (route === null || !route.is_enabled) {
    return { response: refuse(event, 404, "no route for this path") };
  }
  event.route = route.path_prefix;

  if (!hasScopes(token.scopes, route.required_scopes)) {
    return { response: refuseVerification(event, "insufficient_scope") };
  }
  // Rate limits: not enforced at the edge (docs/edge.md says why and what would do it).

  let credential = null;
  if (route.credential) {
    try {
      credential = {
        header: route.credential.header,
        query_param: route.credential.query_param,
        value: await decryptSecret(env.EDGE_KEY, route.credential.sealed_value, route.path_prefix),
      };
    } catch (error) {
      console.error(`route ${route.path_prefix}: the upstream credential cannot be decrypted (${error.message})`);
      return {
        response: refuse(event, 502, "the route's upstream credential cannot be decrypted", "credential_error"),
      };
    }
  }
  let upstreamUrl;
  try {
    const rawPath = url.pathname.startsWith(route.path_prefix) || route.path_prefix === "/"
      ? url.pathname
      : encodeURI(path);
    upstreamUrl = buildUpstreamUrl(route.upstream_url, route.path_prefix, rawPath, url.search, credential);
  } catch (error) {
    if (error instanceof UnsafePathError) {
      return { response: refuse(event, 400, "path segments '.' and '..' are refused") };
    }
    throw error;
  }
  return forward(request, event, route, upstreamUrl, buildUpstreamHeaders(request.headers, credential), declared, startedMs);
}

async function forward(request, event, route, upstreamUrl, headers, declared, startedMs) {
  const hasBody = request.body !== null && !["GET", "HEAD"].includes(request.method);
  let body = hasBody ? request.body : undefined;
  if (hasBody && declared !== null) {
    event.bytes_in = Number(declared);
  } else if (hasBody) {
    // No declared length (chunked): count what passes, as the Python gateway does.
    body = body.pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          event.bytes_in += chunk.byteLength;
          controller.enqueue(chunk);
        },
      }),
    );
  }
  const totalTimeoutMs = 1000 * (route.total_timeout_s ?? DEFAULT_TOTAL_TIMEOUT_S);
  let upstream;
  try {
    upstream = await fetch(upstreamUrl, {
      method: request.method,
      headers,
      body,
      redirect: "manual",
      signal: AbortSignal.timeout(totalTimeoutMs),
    });
  } catch (error) {
    const [status, kind, message] = classifyFailure(error);
    return { response: refuse(event, status, message, kind) };
  }
  event.ttfb_ms = Date.now() - startedMs;
  event.response_status = upstream.status;
  const responseHeaders = buildResponseHeaders(upstream.headers);
  if (upstream.body === null) {
    return { response: new Response(null, { status: upstream.status, headers: responseHeaders }) };
  }
  // Relayed chunk by chunk as the upstream sends them; the event is reported when the body
  // ends, breaks off, or the client goes away.
  let finished;
  const done = new Promise((resolve) => {
    finished = resolve;
  });
  const reader = upstream.body.getReader();
  const relay = new ReadableStream(
    {
      async pull(controller) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (error) {
          event.response_status = 502;
          event.failure_kind = "upstream_reset";
          event.error_message = "the upstream broke off the response";
          controller.error(error);
          finished();
          return;
        }
        if (chunk.done) {
          controller.close();
          finished();
          return;
        }
        event.bytes_out += chunk.value.byteLength;
        controller.enqueue(chunk.value);
      },
      cancel(reason) {
        event.response_status = 499;
        event.failure_kind = "client_disconnect";
        event.error_message = "client closed the connection";
        finished();
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return {
    response: new Response(relay, { status: upstream.status, headers: responseHeaders }),
    done,
  };
}

/** (status, failure kind, message) for an error thrown before the upstream answered. */
export function classifyFailure(error) {
  if (error && (error.name === "TimeoutError" || error.name === "AbortError")) {
    return [504, "timeout", "the upstream did not answer in time"];
  }
  const text = String(error && error.message ? error.message : error).toLowerCase();
  // workerd reports a refused connection as "Network connection lost", the same words as a
  // connection dropped before the answer: both are taken as the common case, a refusal.
  if (text.includes("connect") || text.includes("refused") || text.includes("lost")) {
    return [502, "connect_error", "could not connect to the upstream"];
  }
  console.error(`unexpected upstream failure: ${error}`);
  return [502, "upstream_error", "the upstream exchange failed"];
}

export async function handle(request, env, ctx) {
  const startedMs = Date.now();
  const url = new URL(request.url);
  if (url.pathname === "/healthz") {
    return jsonResponse(200, JSON.stringify({ status: "ok", usage: stats }));
  }
  const event = buildEvent(request, startedMs);
  let outcome;
  try {
    outcome = await pipeline(request, env, ctx, url, event, startedMs);
  } catch (error) {
    console.error(`edge gateway failure: ${error && error.stack ? error.stack : error}`);
    outcome = { response: refuse(event, 502, "the upstream exchange failed", "upstream_error") };
  }
  const finish = () => {
    event.response_time_ms = Date.now() - startedMs;
    report(env, ctx, addLlmUsage(event, null));
  };
  if (outcome.done) ctx.waitUntil(outcome.done.then(finish));
  else finish();
  return outcome.response;
}

export default {
  fetch: handle,
  queue: consumeUsage,
};
