"""Tests of the control plane's HTTP API (`tokenmanager.api`)."""
