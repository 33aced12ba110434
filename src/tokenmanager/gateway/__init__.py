"""The gateway (data plane): a pure-ASGI proxy that authenticates, authorizes, injects upstream
credentials, streams to the upstream and records every call."""
