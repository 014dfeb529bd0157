"""Two-way sync conflicts: detection and resolution rules (pure)."""
