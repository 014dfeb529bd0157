"""Apply canonical records to target databases."""
