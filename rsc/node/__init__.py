"""The node process: server, executor, graceful shutdown, CLI entry."""
