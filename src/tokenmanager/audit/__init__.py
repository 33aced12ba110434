"""The audit log: who changed what, when and from where (written by each service)."""
