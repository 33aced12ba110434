// Loopback servers for the Worker tests: an upstream that echoes what it received (and streams
// on /stream), and a stand-in for the control plane's /api/usage-log/batch.
import http from "node:http";

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

export default async function ({ provide }) {
  const upstream = http.createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      if (request.url.startsWith("/base/stream")) {
        response.writeHead(200, { "content-type": "text/event-stream", "x-upstream": "yes" });
        let n = 0;
        const timer = setInterval(() => {
          response.write(`data: ${n}\n\n`);
          if (++n === 3) {
            clearInterval(timer);
            response.end();
          }
        }, 20);
        return;
      }
      response.writeHead(200, {
        "content-type": "application/json",
        "x-upstream": "yes",
        "keep-alive": "timeout=5",
      });
      response.end(JSON.stringify({
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: Buffer.concat(chunks).toString("utf-8"),
      }));
    });
  });
  const received = [];
  let failNext = 0;
  const collector = http.createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      if (request.url === "/received") {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(JSON.stringify(received));
        return;
      }
      if (request.url === "/fail-next") {
        failNext = Number(Buffer.concat(chunks).toString() || "1");
        response.end("ok");
        return;
      }
      if (failNext > 0) {
        failNext--;
        response.writeHead(503);
        response.end("down");
        return;
      }
      const records = JSON.parse(Buffer.concat(chunks).toString("utf-8"));
      received.push({ ingestKey: request.headers["x-ingest-key"], records });
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ accepted: records.length, rejected: 0, errors: [] }));
    });
  });
  provide("upstreamPort", await listen(upstream));
  provide("collectorPort", await listen(collector));
  return async () => {
    upstream.close();
    collector.close();
  };
}
