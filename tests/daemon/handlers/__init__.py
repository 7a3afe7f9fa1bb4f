"""Handler modules that the daemon tests' worker processes import by name."""
