"""The control plane's HTTP API (FastAPI): thin routers over the services."""
