"""Security audit: anomaly detectors over the usage records, findings, alerts (webhooks) and
the opt-in automatic response. See docs/security.md."""
