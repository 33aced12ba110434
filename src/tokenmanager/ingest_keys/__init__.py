"""Ingest keys: what external gateways present to post usage records."""
