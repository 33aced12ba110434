// Usage events from the edge: the same event as the Python gateway's (tokenmanager/usage/
// events.py), posted as records to the control plane's `/api/usage-log/batch` with an ingest
// key. The durable path is a Cloudflare Queue (producer and consumer in this Worker: a failed
// post is retried, and the control plane ignores an `event_id` it already has, so a replay is
// never counted twice); without a Queue binding, events are batched per isolate and posted from
// `ctx.waitUntil`, retried a few times, then dropped -- counted and logged, never silently.

export const FLUSH_DELAY_MS = 200;
export const MAX_DIRECT_BATCH = 200;
export const DIRECT_ATTEMPTS = 3;
export const RETRY_BASE_MS = 500;
export const QUEUE_RETRY_DELAY_S = 2;

/** Per-isolate counters (Workers have no shared memory): shown at /healthz and in the logs. */
export const stats = {
  recorded: 0,
  queued: 0,
  queue_send_failed: 0,
  posted: 0,
  post_failed: 0,
  retried: 0,
  dropped: 0,
  rejected: 0,
};

/** A time-ordered UUID (RFC 9562 version 7): 48-bit Unix milliseconds, then randomness. */
export function uuid7(unixMs = Date.now()) {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let ms = unixMs;
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = 0x70 | (bytes[6] & 0x0f);
  bytes[8] = 0x80 | (bytes[8] & 0x3f);
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A fresh event for a call that started at `startedMs`; the pipeline fills in the rest. */
export function buildEvent(request, startedMs) {
  return {
    event_id: uuid7(startedMs),
    token_hash: "",
    route: null,
    timestamp: new Date(startedMs).toISOString(),
    response_status: null,
    response_time_ms: null,
    ttfb_ms: null,
    ip_address: request.headers.get("cf-connecting-ip"),
    user_agent: request.headers.get("user-agent"),
    request_method: request.method.slice(0, 10),
    error_message: null,
    failure_kind: null,
    bytes_in: 0,
    bytes_out: 0,
    source: "edge",
    // LLM usage (model, prompt/completion/cached/reasoning tokens, usage_source) is added here
    // by `addLlmUsage` once the control plane's ingestion accepts those fields.
  };
}

/**
 * The extension point for the LLM-usage work: given the finished event and what the relay saw
 * of the response, add `model`, `prompt_tokens`, … Until then it adds nothing, so the records
 * stay valid for the ingestion endpoint, which refuses unknown fields.
 */
export function addLlmUsage(event, _observed) {
  return event;
}

/** Hand a finished event to the Queue, or to the per-isolate batch when no Queue is bound. */
export function report(env, ctx, event) {
  stats.recorded++;
  if (env.USAGE_QUEUE) {
    ctx.waitUntil(
      env.USAGE_QUEUE.send(event, { contentType: "json" }).then(
        () => {
          stats.queued++;
        },
        (error) => {
          stats.queue_send_failed++;
          console.error(`usage: queue send failed (${error}); posting directly`);
          enqueueDirect(env, ctx, event);
        },
      ),
    );
  } else {
    enqueueDirect(env, ctx, event);
  }
}

let pending = [];
let flushScheduled = false;

function enqueueDirect(env, ctx, event) {
  pending.push(event);
  if (pending.length >= MAX_DIRECT_BATCH) {
    ctx.waitUntil(flushDirect(env));
  } else if (!flushScheduled) {
    flushScheduled = true;
    // Calls arriving during the delay join this batch; this call's waitUntil keeps the
    // isolate alive until it is posted.
    ctx.waitUntil(
      new Promise((resolve) => setTimeout(resolve, Number(env.USAGE_FLUSH_DELAY_MS ?? FLUSH_DELAY_MS))).then(() => {
        flushScheduled = false;
        return flushDirect(env);
      }),
    );
  }
}

async function flushDirect(env) {
  const batch = pending;
  pending = [];
  if (batch.length === 0) return;
  for (let attempt = 1; attempt <= DIRECT_ATTEMPTS; attempt++) {
    try {
      await postBatch(env, batch);
      return;
    } catch (error) {
      if (attempt < DIRECT_ATTEMPTS) {
        stats.retried++;
        const baseMs = Number(env.USAGE_RETRY_BASE_MS ?? RETRY_BASE_MS);
        await new Promise((resolve) => setTimeout(resolve, baseMs * 2 ** (attempt - 1)));
      } else {
        stats.dropped += batch.length;
        console.error(
          `usage: dropped ${batch.length} event(s) after ${DIRECT_ATTEMPTS} attempts (${error}); ` +
            `dropped so far in this isolate: ${stats.dropped}. Bind a Queue to keep them.`,
        );
      }
    }
  }
}

/** POST the records; throws when the control plane did not take them (so they are retried). */
export async function postBatch(env, records) {
  if (!env.CONTROL_PLANE_URL) throw new Error("CONTROL_PLANE_URL is not set");
  let response;
  try {
    response = await fetch(new URL("/api/usage-log/batch", env.CONTROL_PLANE_URL), {
      method: "POST",
      headers: { "content-type": "application/json", "x-ingest-key": env.INGEST_KEY || "" },
      body: JSON.stringify(records),
    });
  } catch (error) {
    stats.post_failed++;
    throw error;
  }
  if (!response.ok) {
    stats.post_failed++;
    await response.body?.cancel();
    throw new Error(`control plane answered ${response.status}`);
  }
  const result = await response.json();
  stats.posted += result.accepted ?? 0;
  if (result.rejected) {
    // A refused record will not become valid by retrying: count and log it, keep the rest.
    stats.rejected += result.rejected;
    console.error(`usage: control plane rejected ${result.rejected} record(s): ${JSON.stringify(result.errors)}`);
  }
}

/** The Queue consumer: one POST per delivered batch; on failure the whole batch comes back. */
export async function consumeUsage(batch, env) {
  try {
    await postBatch(env, batch.messages.map((message) => message.body));
    batch.ackAll();
  } catch (error) {
    stats.retried += batch.messages.length;
    console.error(`usage: posting ${batch.messages.length} queued event(s) failed (${error}); retrying`);
    batch.retryAll({ delaySeconds: QUEUE_RETRY_DELAY_S });
  }
}
