"""Verification, pure: canonical value text, row digests, chunk summaries and narrowing."""
