"""Analytics: the figures the API and the dashboard show, read from the rollups (and from raw
rows only for recent lists and drill-downs)."""
