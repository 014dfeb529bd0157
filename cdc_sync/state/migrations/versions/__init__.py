"""Alembic revisions of the cdc_sync_* tables (frozen: never edit one that has shipped)."""
