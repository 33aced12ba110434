// The Worker's pipeline inside workerd, against loopback servers: answers, stripping and
// injection, streaming, usage posted through waitUntil and through the Queue consumer.
import { createExecutionContext, createMessageBatch, getQueueResult, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, inject, it } from "vitest";
import worker, { resetConfigCache } from "../src/index.js";
import { encryptSecret } from "../src/secrets.js";
import { stats } from "../src/usage.js";

const TOKEN = "ntk_xUGsXNLQa4rBd6dp9403GJpRrk0PxucSf2pbzU7YEYC4SKTOo";
const TOKEN_HASH = "5de39f8498db6fd8f6557d4f03ff55f35902425f3d6058a10a5ca7b269046679";
const upstream = () => `http://127.0.0.1:${inject("upstreamPort")}`;
const collector = () => `http://127.0.0.1:${inject("collectorPort")}`;

function testEnv(overrides = {}) {
  return { ...env, CONTROL_PLANE_URL: collector(), ...overrides };
}

async function call(path, init = {}, overrides = {}) {
  const ctx = createExecutionContext();
  const response = await worker.fetch(new Request(`http://edge${path}`, init), testEnv(overrides), ctx);
  const body = await response.text();
  await waitOnExecutionContext(ctx);
  return { response, body };
}

const tokenRecord = (extra = {}) => ({
  id: 1, team_id: "t", scopes: ["echo:read"], expires_at: null, revoked_at: null, ...extra,
});

beforeAll(async () => {
  resetConfigCache();
  await env.TOKENS.put(`token:${TOKEN_HASH}`, JSON.stringify(tokenRecord()));
  await env.TOKENS.put("config", JSON.stringify({
    routes: [
      { path_prefix: "/api/echo", upstream_url: `${upstream()}/base`, required_scopes: ["echo:read"], is_enabled: true,
        total_timeout_s: 10, credential: { header: "X-Upstream-Key", query_param: null,
          sealed_value: await encryptSecret(env.EDGE_KEY, "upstream-secret", "/api/echo") } },
      { path_prefix: "/api/query", upstream_url: `${upstream()}/q?v=2`, required_scopes: [], is_enabled: true,
        total_timeout_s: 10, credential: { header: null, query_param: "key",
          sealed_value: await encryptSecret(env.EDGE_KEY, "qsecret", "/api/query") } },
      { path_prefix: "/api/admin", upstream_url: upstream(), required_scopes: ["admin"], is_enabled: true,
        total_timeout_s: 10, credential: null },
      { path_prefix: "/api/off", upstream_url: upstream(), required_scopes: [], is_enabled: false,
        total_timeout_s: 10, credential: null },
      { path_prefix: "/api/down", upstream_url: "http://127.0.0.1:9", required_scopes: [], is_enabled: true,
        total_timeout_s: 10, credential: null },
    ],
    imported_hashes: [],
  }));
});

const UNAUTHORIZED = { error: { status: 401, code: "unauthorized", message: "missing or invalid API token" } };

describe("answers", () => {
  it("forwards with the credential injected and the client's token stripped", async () => {
    const { response, body } = await call("/api/echo/a/b?x=1", {
      headers: { "x-api-key": TOKEN, "x-upstream-key": "forged", connection: "x-secret", "x-secret": "s" },
    });
    expect(response.status).toBe(200);
    const seen = JSON.parse(body);
    expect(seen.url).toBe("/base/a/b?x=1");
    expect(seen.headers["x-upstream-key"]).toBe("upstream-secret");
    expect(seen.headers["x-api-key"]).toBeUndefined();
    expect(seen.headers["x-secret"]).toBeUndefined();
    expect(response.headers.get("x-upstream")).toBe("yes");
    expect(response.headers.get("keep-alive")).toBe(null);
  });
  it("injects a query parameter credential after the upstream's fixed query", async () => {
    const { body } = await call("/api/query/z?a=1&key=forged", { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(JSON.parse(body).url).toBe("/q/z?v=2&a=1&key=qsecret");
  });
  it("answers 401 alike for missing, malformed, unknown, revoked and expired tokens", async () => {
    const unknown = "ntk_" + "A".repeat(43);
    const answers = [
      await call("/api/echo"),
      await call("/api/echo", { headers: { "x-api-key": TOKEN.slice(0, -1) + "x" } }),
      await call("/api/echo", { headers: { "x-api-key": unknown } }),
    ];
    await env.TOKENS.put(`token:${TOKEN_HASH}`, JSON.stringify(tokenRecord({ revoked_at: "2026-01-01T00:00:00+00:00" })));
    answers.push(await call("/api/echo", { headers: { "x-api-key": TOKEN } }));
    await env.TOKENS.put(`token:${TOKEN_HASH}`, JSON.stringify(tokenRecord({ expires_at: "2000-01-01T00:00:00+00:00" })));
    answers.push(await call("/api/echo", { headers: { "x-api-key": TOKEN } }));
    await env.TOKENS.put(`token:${TOKEN_HASH}`, JSON.stringify(tokenRecord()));
    for (const { response, body } of answers) {
      expect(response.status).toBe(401);
      expect(response.headers.get("www-authenticate")).toBe('Bearer realm="tokenmanager"');
      expect(JSON.parse(body)).toEqual(UNAUTHORIZED);
    }
  });
  it("answers 403 for a missing scope and 404 for no or a disabled route", async () => {
    const headers = { "x-api-key": TOKEN };
    const forbidden = await call("/api/admin", { headers });
    expect(forbidden.response.status).toBe(403);
    expect(JSON.parse(forbidden.body).error.code).toBe("forbidden");
    for (const path of ["/nowhere", "/api/off/x"]) {
      const missing = await call(path, { headers });
      expect(missing.response.status).toBe(404);
      expect(JSON.parse(missing.body)).toEqual({ error: { status: 404, code: "not_found", message: "no route for this path" } });
    }
  });
  // workerd logs "uncaught exception … Network connection lost" for any refused fetch, even
  // one whose rejection is handled (a bare `fetch(…).catch(() => {})` does the same).
  it("answers 502 connect_error when the upstream refuses", async () => {
    const { response, body } = await call("/api/down", { headers: { "x-api-key": TOKEN } });
    expect(response.status).toBe(502);
    expect(JSON.parse(body).error.code).toBe("bad_gateway");
  });
  it("relays a streamed response chunk by chunk", async () => {
    const ctx = createExecutionContext();
    const response = await worker.fetch(
      new Request("http://edge/api/echo/stream", { headers: { "x-api-key": TOKEN } }), testEnv(), ctx);
    const reader = response.body.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toBe("data: 0\n\n"); // arrived before the upstream finished
    let rest = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
    expect(rest).toBe("data: 1\n\ndata: 2\n\n");
    await waitOnExecutionContext(ctx);
  });
});

describe("usage", () => {
  it("posts each call's event to the batch ingestion with the ingest key", async () => {
    await call("/api/echo/usage-check", { method: "POST", body: "12345", headers: { "x-api-key": TOKEN, "user-agent": "vt", "cf-connecting-ip": "203.0.113.9" } });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const received = await (await fetch(`${collector()}/received`)).json();
    const records = received.flatMap((post) => post.records);
    const event = records.find((r) => r.user_agent === "vt");
    expect(received.every((post) => post.ingestKey === "tik_test")).toBe(true);
    expect(event).toMatchObject({
      token_hash: TOKEN_HASH, route: "/api/echo", response_status: 200, request_method: "POST",
      ip_address: "203.0.113.9", bytes_in: 5, failure_kind: null, source: "edge",
    });
    expect(event.event_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
    expect(event.bytes_out).toBeGreaterThan(0);
    const refused = records.filter((r) => r.failure_kind === "not_found");
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0].response_status).toBe(401);
  });
  it("the Queue consumer acks a posted batch and retries the whole batch on failure", async () => {
    const messages = [{ id: "m1", timestamp: new Date(), attempts: 1, body: { event_id: "x", token_hash: TOKEN_HASH } }];
    const ok = createMessageBatch("usage", messages);
    const ctxOk = createExecutionContext();
    await worker.queue(ok, testEnv(), ctxOk);
    const okResult = await getQueueResult(ok, ctxOk);
    expect(okResult.ackAll).toBe(true);
    expect(okResult.retryBatch.retry).toBe(false);

    await fetch(`${collector()}/fail-next`, { method: "POST", body: "1" });
    const failing = createMessageBatch("usage", messages);
    const ctxFail = createExecutionContext();
    const before = stats.retried;
    await worker.queue(failing, testEnv(), ctxFail);
    const failResult = await getQueueResult(failing, ctxFail);
    expect(failResult.retryBatch.retry).toBe(true);
    expect(failResult.ackAll).toBe(false);
    expect(stats.retried).toBe(before + 1);
  });
});

describe("KV outage", () => {
  it("answers 503 unavailable when neither the routes nor the token can be read", async () => {
    resetConfigCache();
    const broken = { get: async () => { throw new Error("KV down"); } };
    const { response, body } = await call("/api/echo", { headers: { "x-api-key": TOKEN } }, { TOKENS: broken });
    expect(response.status).toBe(503);
    expect(JSON.parse(body)).toEqual({ error: { status: 503, code: "unavailable", message: "token verification is unavailable" } });
  });
});

describe("usage without a Queue", () => {
  it("retries a failed post, then drops the batch counted and logged", async () => {
    const before = { ...stats };
    await fetch(`${collector()}/fail-next`, { method: "POST", body: "3" });
    await call("/api/echo/dropped", { headers: { "x-api-key": TOKEN } }, { USAGE_RETRY_BASE_MS: "1" });
    expect(stats.retried - before.retried).toBe(2);
    expect(stats.dropped - before.dropped).toBe(1);
    expect(stats.post_failed - before.post_failed).toBe(3);
  });
  it("a post that fails once is delivered on the retry", async () => {
    const before = { ...stats };
    await fetch(`${collector()}/fail-next`, { method: "POST", body: "1" });
    await call("/api/echo/retried", { headers: { "x-api-key": TOKEN, "user-agent": "retried" } }, { USAGE_RETRY_BASE_MS: "1" });
    expect(stats.dropped).toBe(before.dropped);
    const received = await (await fetch(`${collector()}/received`)).json();
    expect(received.flatMap((post) => post.records).filter((r) => r.user_agent === "retried")).toHaveLength(1);
  });
});
