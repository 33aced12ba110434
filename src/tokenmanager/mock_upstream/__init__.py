"""A mock upstream for tests, the demo and benchmarks: OpenAI-compatible endpoints and HTTP
behaviours on demand (echo, status, delay, streams, bytes, and faults)."""
