"""sinks/sql."""
