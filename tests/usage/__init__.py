"""Tests of usage events, rollups, the spool, the recorder and the usage store."""
