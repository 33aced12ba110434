"""Admin users, their passwords and their sessions."""
