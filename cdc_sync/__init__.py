"""cdc-sync: change-data-capture replication with exactly-once effect."""
