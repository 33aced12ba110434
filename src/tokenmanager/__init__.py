"""Token Manager: an API token gateway and usage-analytics platform."""

__version__ = "0.1.0"
