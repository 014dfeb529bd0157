"""Record transforms (mapping, cleansing, masking) applied between source and sink."""
