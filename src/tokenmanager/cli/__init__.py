"""The `tokenmanager` command line: printing and argument parsing only; work goes to services."""
