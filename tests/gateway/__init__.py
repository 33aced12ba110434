"""Tests of the gateway (`tokenmanager.gateway`) and the SSRF guard it connects through."""
