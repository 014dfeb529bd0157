"""Alembic scripts for the cdc_sync_* tables, shipped inside the package so installs find them."""
