"""``python -m cdc_sync``."""

from __future__ import annotations

from cdc_sync.cli import main

main()
