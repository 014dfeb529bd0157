"""sources/postgres."""
