// Pure parts of the Worker, inside workerd: token checksum and hash, routing, scopes,
// rewriting, sealed secrets (including one sealed by the Python control plane), UUIDv7.
import { describe, expect, it } from "vitest";
import { hasScopes, matchRoute } from "../src/routing.js";
import { buildResponseHeaders, buildUpstreamHeaders, buildUpstreamUrl, extractToken, UnsafePathError } from "../src/rewriting.js";
import { decryptSecret, encryptSecret } from "../src/secrets.js";
import { hashToken, hasValidChecksum } from "../src/tokens.js";
import { uuid7 } from "../src/usage.js";

// Issued by tokenmanager.tokens.codec.build_token_secret, with its SHA-256 from hash_token.
const TOKEN = "ntk_xUGsXNLQa4rBd6dp9403GJpRrk0PxucSf2pbzU7YEYC4SKTOo";
const TOKEN_HASH = "5de39f8498db6fd8f6557d4f03ff55f35902425f3d6058a10a5ca7b269046679";
const EDGE_KEY = "utdcqm4oQlZykpVJeLLco-nrK976lzMb73HyKJsmYfk";
// tokenmanager.edge.records.seal_secret(EDGE_KEY, "sk-upstream-secret", "/api/echo")
const SEALED_BY_PYTHON = "v1.15mhY23NSNoAWV-u.qkAYqWUwlDIJmvxhU9Z3SToP-yEJidDPJxseK9Ed5A6pyg";

describe("tokens", () => {
  it("accepts a token issued by the control plane", () => {
    expect(hasValidChecksum(TOKEN)).toBe(true);
  });
  it("rejects a one-character typo, a wrong prefix and a wrong length", () => {
    expect(hasValidChecksum(TOKEN.slice(0, 10) + (TOKEN[10] === "a" ? "b" : "a") + TOKEN.slice(11))).toBe(false);
    expect(hasValidChecksum("xtk_" + TOKEN.slice(4))).toBe(false);
    expect(hasValidChecksum(TOKEN + "0")).toBe(false);
    expect(hasValidChecksum(TOKEN.slice(0, -1) + "!")).toBe(false);
  });
  it("hashes like the control plane", async () => {
    expect(await hashToken(TOKEN)).toBe(TOKEN_HASH);
  });
});

describe("routing", () => {
  const routes = [{ path_prefix: "/api" }, { path_prefix: "/api/echo" }, { path_prefix: "/" }];
  it("picks the longest prefix at a / boundary", () => {
    expect(matchRoute(routes, "/api/echo/x").path_prefix).toBe("/api/echo");
    expect(matchRoute(routes, "/api/echoes").path_prefix).toBe("/api");
    expect(matchRoute(routes, "/other").path_prefix).toBe("/");
    expect(matchRoute(routes.slice(0, 2), "/other")).toBe(null);
  });
  it("grants scopes as the Python gateway does", () => {
    expect(hasScopes(["echo:read"], ["echo:read"])).toBe(true);
    expect(hasScopes(["echo:*"], ["echo:write", "echo"])).toBe(true);
    expect(hasScopes(["*"], ["anything"])).toBe(true);
    expect(hasScopes(["echo:read"], ["echo:write"])).toBe(false);
    expect(hasScopes([], [])).toBe(true);
  });
});

describe("rewriting", () => {
  it("takes X-API-Key first, then a Bearer token", () => {
    expect(extractToken(new Headers({ "x-api-key": " a ", authorization: "Bearer b" }))).toBe("a");
    expect(extractToken(new Headers({ authorization: "bearer b" }))).toBe("b");
    expect(extractToken(new Headers({ authorization: "Basic b" }))).toBe(null);
  });
  it("strips hop-by-hop, Connection-named and client credentials, then injects", () => {
    const headers = new Headers({
      "x-api-key": TOKEN, authorization: "Bearer x", connection: "close, x-private",
      "x-private": "p", "keep-alive": "1", "x-upstream-key": "client-forged", "x-kept": "k",
    });
    const upstream = buildUpstreamHeaders(headers, { header: "X-Upstream-Key", value: "real" });
    expect(Object.fromEntries(upstream)).toEqual({ "x-kept": "k", "x-upstream-key": "real" });
  });
  it("drops hop-by-hop response headers", () => {
    const relayed = buildResponseHeaders(new Headers({ "keep-alive": "1", server: "s", "x-a": "1" }));
    expect(Object.fromEntries(relayed)).toEqual({ "x-a": "1" });
  });
  it("builds the upstream URL with the fixed query first and the credential parameter last", () => {
    const credential = { query_param: "key", value: "s e" };
    expect(buildUpstreamUrl("http://u/v1?api-version=2", "/api/echo", "/api/echo/a/b", "?x=1&key=forged", credential))
      .toBe("http://u/v1/a/b?api-version=2&x=1&key=s+e");
    expect(buildUpstreamUrl("http://u/base", "/", "/a", "", null)).toBe("http://u/base/a");
    expect(() => buildUpstreamUrl("http://u", "/api", "/api/../x", "", null)).toThrow(UnsafePathError);
  });
});

describe("secrets", () => {
  it("opens what the Python control plane sealed", async () => {
    expect(await decryptSecret(EDGE_KEY, SEALED_BY_PYTHON, "/api/echo")).toBe("sk-upstream-secret");
  });
  it("refuses a ciphertext moved to another route", async () => {
    await expect(decryptSecret(EDGE_KEY, SEALED_BY_PYTHON, "/api/other")).rejects.toThrow();
  });
  it("round-trips", async () => {
    const sealed = await encryptSecret(EDGE_KEY, "value", "/p");
    expect(sealed).not.toContain("value");
    expect(await decryptSecret(EDGE_KEY, sealed, "/p")).toBe("value");
  });
});

describe("uuid7", () => {
  it("is a version 7 UUID carrying the time", () => {
    const id = uuid7(0x0123456789ab);
    expect(id).toMatch(/^01234567-89ab-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(uuid7()).not.toBe(uuid7());
  });
});

describe("opened credentials", () => {
  it("are reused only under the key that opened them", async () => {
    expect(await decryptSecret(EDGE_KEY, SEALED_BY_PYTHON, "/api/echo")).toBe("sk-upstream-secret");
    const otherKey = "A".repeat(43);
    await expect(decryptSecret(otherKey, SEALED_BY_PYTHON, "/api/echo")).rejects.toThrow();
  });
});
