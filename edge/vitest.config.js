import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// Unit and integration tests inside workerd (the real Workers runtime). The upstream and the
// control plane's ingestion are loopback servers started by test/global-setup.js.
export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        cf: false,
        bindings: {
          // Test-only key; real ones come from `tokenmanager edge init` as a Worker secret.
          EDGE_KEY: "utdcqm4oQlZykpVJeLLco-nrK976lzMb73HyKJsmYfk",
          INGEST_KEY: "tik_test",
          CONFIG_CACHE_MS: "0",
          USAGE_FLUSH_DELAY_MS: "5",
        },
      },
    }),
  ],
  test: {
    globalSetup: ["./test/global-setup.js"],
  },
});
