"""The edge gateway's control-plane side: KV records for the Cloudflare Worker in `edge/`, the
edge key that seals upstream credentials for it, and the sync that pushes them through wrangler."""
