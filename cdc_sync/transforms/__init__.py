"""Record transforms (mapping, cleansing, masking) applied between source and sink."""

from __future__ import annotations

from cdc_sync.transforms.custom import Change
from cdc_sync.transforms.errors import RuleError
from cdc_sync.transforms.table import Applied, TableTransform, compile_table

__all__ = ["Applied", "Change", "RuleError", "TableTransform", "compile_table"]
