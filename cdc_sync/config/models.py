"""Frozen pydantic models of the YAML configuration: the user contract."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from cdc_sync.config.dsn import parse_mysql_dsn

_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,40}$"
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresSource(_Model):
    type: Literal["postgres"]
    dsn: SecretStr
    slot: str | None = Field(default=None, pattern=_NAME)
    publication: str | None = Field(default=None, pattern=_NAME)
    create_slot: bool = True  # create slot/publication when missing and permitted
    status_interval_seconds: float = Field(default=10.0, gt=0)


class MysqlSource(_Model):
    """MySQL 8.0+ / MariaDB 10.6+ binlog capture; the flavour is detected from the server."""

    type: Literal["mysql"]
    dsn: SecretStr
    server_id: int = Field(ge=1, le=2**32 - 1)  # unique among the server's replicas
    # auto: GTID when the server has it on (always on MariaDB), else file:pos.
    position_mode: Literal["auto", "gtid", "file"] = "auto"
    heartbeat_seconds: float = Field(default=1.0, gt=0, le=3600)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: SecretStr) -> SecretStr:
        parse_mysql_dsn(v.get_secret_value())
        return v


class PostgresTarget(_Model):
    type: Literal["postgres"]
    dsn: SecretStr
    create_tables: bool = True
    state_schema: str | None = Field(default=None, pattern=_NAME)


class MysqlTarget(_Model):
    type: Literal["mysql"]
    dsn: SecretStr
    create_tables: bool = True
    # Database for the cdc_sync_* tables; default: the DSN's database.
    state_schema: str | None = Field(default=None, pattern=_NAME)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: SecretStr) -> SecretStr:
        dsn = parse_mysql_dsn(v.get_secret_value())
        if not dsn.database:
            raise ValueError("the MySQL target URL must name a database (mysql://…/dbname)")
        return v


SourceConfig = Annotated[PostgresSource | MysqlSource, Field(discriminator="type")]
TargetConfig = Annotated[PostgresTarget | MysqlTarget, Field(discriminator="type")]


class TableConfig(_Model):
    target: str | None = None
    apply_truncate: bool = True

    @field_validator("target")
    @classmethod
    def _qualified(cls, v: str | None) -> str | None:
        if v is not None and not _TABLE.match(v):
            raise ValueError(f"expected schema.table, got {v!r}")
        return v


class BatchConfig(_Model):
    """Several source transactions may share a target commit; a source one is never split."""

    max_rows: int = Field(default=20_000, ge=1)
    max_seconds: float = Field(default=0.5, gt=0)
    flush_rows: int = Field(default=5_000, ge=1)  # rows sent to the open target transaction


class RetryConfig(_Model):
    initial_seconds: float = Field(default=0.5, gt=0)
    max_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int | None = Field(default=None, ge=1)  # None: retry transient errors forever


class PipelineConfig(_Model):
    source: str
    target: str
    tables: dict[str, TableConfig]
    audit: Literal["row", "transaction", "off"] = "row"
    batch: BatchConfig = BatchConfig()
    retry: RetryConfig = RetryConfig()

    @field_validator("audit", mode="before")
    @classmethod
    def _audit_off(cls, v: object) -> object:
        # YAML 1.1 reads a bare `audit: off` as the boolean false; that is what the user meant.
        return "off" if v is False else v

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: dict[str, TableConfig]) -> dict[str, TableConfig]:
        if not v:
            raise ValueError("at least one table is required")
        bad = [k for k in v if not _TABLE.match(k)]
        if bad:
            raise ValueError(f"expected schema.table names, got {bad}")
        return v


class LoggingConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Model):
    sources: dict[str, SourceConfig]
    targets: dict[str, TargetConfig]
    pipelines: dict[str, PipelineConfig]
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems: list[str] = []
        for name, p in self.pipelines.items():
            if not re.match(_NAME, name):
                problems.append(f"pipelines.{name}: name must match {_NAME}")
            if p.source not in self.sources:
                problems.append(f"pipelines.{name}.source: no source named {p.source!r}")
            if p.target not in self.targets:
                problems.append(f"pipelines.{name}.target: no target named {p.target!r}")
        for sname, s in self.sources.items():
            users = [n for n, p in self.pipelines.items() if p.source == sname]
            if len(users) > 1 and isinstance(s, PostgresSource) and (s.slot or s.publication):
                problems.append(
                    f"sources.{sname}.slot: source feeds pipelines {users}; a slot/publication "
                    "name cannot be shared, remove it to get cdc_sync_<pipeline> per pipeline"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def slot_for(self, pipeline: str) -> str:
        src = self.sources[self.pipelines[pipeline].source]
        slot = src.slot if isinstance(src, PostgresSource) else None
        return slot or f"cdc_sync_{pipeline}"

    def publication_for(self, pipeline: str) -> str:
        src = self.sources[self.pipelines[pipeline].source]
        pub = src.publication if isinstance(src, PostgresSource) else None
        return pub or f"cdc_sync_{pipeline}"
