// The Worker on Miniflare's API alone (no `wrangler dev` proxy in front): what bench/edge_bench.py
// measures beside `tokenmanager edge dev`. Reads the KV store `edge dev` synced.
//   node scripts/serve.mjs PORT PERSIST_DIR CONTROL_PLANE_URL   (EDGE_KEY, INGEST_KEY from env)
import { Miniflare } from "miniflare";
import { fileURLToPath } from "node:url";

const [port, persist, controlPlane] = process.argv.slice(2);
const mf = new Miniflare({
  host: "127.0.0.1",
  port: Number(port),
  cf: false,
  defaultPersistRoot: `${persist}/v3`,
  workers: [{
    name: "tokenmanager-edge",
    modules: true,
    modulesRoot: fileURLToPath(new URL("../src", import.meta.url)),
    scriptPath: fileURLToPath(new URL("../src/index.js", import.meta.url)),
    modulesRules: [{ type: "ESModule", include: ["**/*.js"] }],
    compatibilityDate: "2026-04-01",
    kvNamespaces: { TOKENS: "tokenmanager-edge-dev" },
    kvPersist: true,
    bindings: {
      CONTROL_PLANE_URL: controlPlane,
      EDGE_KEY: process.env.EDGE_KEY,
      INGEST_KEY: process.env.INGEST_KEY,
    },
  }],
});
await mf.ready;
console.log(`ready on ${port}`);
const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
