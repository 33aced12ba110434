"""The web dashboard: server-rendered pages, their .json twins and the static files."""
