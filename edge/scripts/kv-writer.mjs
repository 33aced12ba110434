// A long-lived writer into a local KV store, for `tokenmanager edge dev`'s sync loop: the same
// wrangler (its getPlatformProxy API) and the same store as `wrangler kv bulk put --local`,
// without starting wrangler again for each change (which costs ~1.5 s, most of a revocation's
// path to the local Worker).
//   node scripts/kv-writer.mjs CONFIG PERSIST_DIR
// Reads one JSON command per line on stdin: {"op": "put", "entries": [{"key", "value"}]} or
// {"op": "delete", "keys": [...]} or {"op": "list", "prefix": "…"}; answers "ok" (for a list,
// "ok <JSON array of names>") or "error: …" per line. Exits at end of input.
import { createInterface } from "node:readline";
import { getPlatformProxy } from "wrangler";

const [configPath, persistDir] = process.argv.slice(2);
const proxy = await getPlatformProxy({
  configPath,
  persist: { path: `${persistDir}/v3` },
  remoteBindings: false,
  envFiles: [],
});
const kv = proxy.env.TOKENS;
process.stdout.write("ready\n");
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  try {
    const command = JSON.parse(line);
    if (command.op === "put") {
      for (const { key, value } of command.entries) await kv.put(key, value);
    } else if (command.op === "delete") {
      for (const key of command.keys) await kv.delete(key);
    } else if (command.op === "list") {
      const names = [];
      let cursor;
      do {
        const page = await kv.list({ prefix: command.prefix, cursor });
        names.push(...page.keys.map((key) => key.name));
        cursor = page.list_complete ? undefined : page.cursor;
      } while (cursor);
      process.stdout.write(`ok ${JSON.stringify(names)}\n`);
      continue;
    } else {
      throw new Error(`unknown op ${command.op}`);
    }
    process.stdout.write("ok\n");
  } catch (error) {
    process.stdout.write(`error: ${String(error.message || error).replace(/\n/g, " ")}\n`);
  }
}
await proxy.dispose();
