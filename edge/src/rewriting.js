// Request rewriting, as in tokenmanager/gateway/rewriting.py. Order matters in
// `buildUpstreamHeaders`: everything the client may not pass on (hop-by-hop headers, anything it
// names in `Connection`, its own credential) is removed first, and only then is the route's
// credential injected, so no client header can strip or shadow the injected one.

export const HOP_BY_HOP = new Set([
  "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
  "upgrade", "proxy-authorization", "proxy-authenticate",
]);
// The gateway sets these itself for the upstream connection.
const REQUEST_MANAGED = new Set(["host", "content-length", "x-api-key", "authorization"]);
// Set by Cloudflare (or wrangler dev) for this hop only: the upstream gets its own.
const EDGE_ADDED = new Set(["cf-connecting-ip", "cf-ipcountry", "cf-ray", "cf-visitor",
  "cf-worker", "cf-ew-via", "cdn-loop", "x-real-ip"]);
const RESPONSE_DROPPED = new Set([...HOP_BY_HOP, "server", "date"]);

/** The client's token from `X-API-Key`, or `Authorization: Bearer …` (the OpenAI SDK). */
export function extractToken(headers) {
  const apiKey = headers.get("x-api-key");
  if (apiKey !== null) return apiKey.trim();
  const authorization = headers.get("authorization");
  if (authorization !== null && authorization.slice(0, 7).toLowerCase() === "bearer ") {
    return authorization.slice(7).trim();
  }
  return null;
}

function namedInConnection(headers) {
  const named = new Set();
  const connection = headers.get("connection");
  if (connection) {
    for (const part of connection.split(",")) {
      if (part.trim()) named.add(part.trim().toLowerCase());
    }
  }
  return named;
}

/** Client headers minus what must not travel, plus the route's credential header. */
export function buildUpstreamHeaders(headers, credential) {
  const named = namedInConnection(headers);
  const injected = credential && credential.header ? credential.header.toLowerCase() : null;
  const upstream = new Headers();
  for (const [name, value] of headers) {
    if (HOP_BY_HOP.has(name) || REQUEST_MANAGED.has(name) || EDGE_ADDED.has(name)) continue;
    if (named.has(name) || name === injected) continue;
    upstream.append(name, value);
  }
  if (injected) upstream.set(credential.header, credential.value);
  return upstream;
}

/** Upstream response headers to relay, without hop-by-hop ones. */
export function buildResponseHeaders(headers) {
  const named = namedInConnection(headers);
  const relayed = new Headers();
  for (const [name, value] of headers) {
    if (!RESPONSE_DROPPED.has(name) && !named.has(name)) relayed.append(name, value);
  }
  return relayed;
}

export class UnsafePathError extends Error {}

/**
 * `upstream_url` + what follows the prefix + the query (credential parameter injected).
 * GET /api/echo/a/b?x=1 on a route /api/echo -> upstream_url + /a/b?x=1; a query in the upstream
 * URL itself comes first (https://host/v1?api-version=2 -> …/v1/a/b?api-version=2&x=1).
 * `rawPath` is the path as the client encoded it.
 */
export function buildUpstreamUrl(upstreamUrl, pathPrefix, rawPath, search, credential) {
  const remainder = pathPrefix === "/" ? rawPath : rawPath.slice(pathPrefix.length);
  if (remainder.split("/").some((segment) => segment === "." || segment === "..")) {
    throw new UnsafePathError(rawPath);
  }
  const queryStart = upstreamUrl.indexOf("?");
  const base = queryStart === -1 ? upstreamUrl : upstreamUrl.slice(0, queryStart);
  const fixedQuery = queryStart === -1 ? "" : upstreamUrl.slice(queryStart + 1);
  let query = [fixedQuery, search.replace(/^\?/, "")].filter((part) => part).join("&");
  if (credential && credential.query_param) {
    const params = new URLSearchParams(query);
    params.delete(credential.query_param);
    params.append(credential.query_param, credential.value);
    query = params.toString();
  }
  return query ? `${base}${remainder}?${query}` : `${base}${remainder}`;
}
