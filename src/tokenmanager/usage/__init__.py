"""Usage: events from the gateway and from ingestion, the recorder, the rollups."""
