"""Routes: which path prefix goes to which upstream, with which credential and scopes."""
