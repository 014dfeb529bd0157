"""Change capture from source databases into canonical records."""
