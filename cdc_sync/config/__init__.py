"""Configuration: pydantic models and the YAML loader."""

from __future__ import annotations

from cdc_sync.config.loader import load_config
from cdc_sync.config.models import Config, PipelineConfig

__all__ = ["Config", "PipelineConfig", "load_config"]
