"""Frozen pydantic models of the YAML configuration: the user contract."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from cdc_sync.config.dsn import check_postgres_dsn, parse_mysql_dsn
from cdc_sync.config.links import LinkConfig, LinkRole, expand, link_roles
from cdc_sync.config.rules import TableRules

_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,40}$"
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")
_TABLE_RULE = (
    "each part a letter or _ then letters, digits, _ or $, case kept, no quotes; a name "
    "that needs quoting (spaces, dots, dashes) is not supported: rename it"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresSource(_Model):
    type: Literal["postgres"]
    dsn: SecretStr
    slot: str | None = Field(default=None, pattern=_NAME)
    publication: str | None = Field(default=None, pattern=_NAME)
    create_slot: bool = True  # create slot/publication when missing and permitted
    status_interval_seconds: float = Field(default=10.0, gt=0)
    # pg_logical_emit_message every N seconds so the slot advances while the published
    # tables are idle and others are busy (None: off).
    heartbeat_seconds: float | None = Field(default=30.0, gt=0)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: SecretStr) -> SecretStr:
        check_postgres_dsn(v.get_secret_value())
        return v


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

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: SecretStr) -> SecretStr:
        check_postgres_dsn(v.get_secret_value())
        return v


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


class TableConfig(TableRules):
    target: str | None = None
    apply_truncate: bool = True
    # MySQL / MariaDB sources: a foreign key of this table with ON DELETE / ON UPDATE
    # CASCADE, SET NULL or SET DEFAULT changes rows the binlog never shows. "stop" refuses
    # to start (and stops when such a key is declared); "accept" replicates the table anyway.
    fk_cascades: Literal["stop", "accept"] = "stop"

    @field_validator("target")
    @classmethod
    def _qualified(cls, v: str | None) -> str | None:
        if v is not None and not _TABLE.match(v):
            raise ValueError(f"expected schema.table ({_TABLE_RULE}), got {v!r}")
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


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    """``'90s'``, ``'30m'``, ``'24h'``, ``'7d'`` in seconds; ValueError otherwise."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration like 90s, 30m, 24h or 7d, got {text!r}")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


class VerifyConfig(_Model):
    """Consistency verification: on demand (``cdc-sync verify``) and, with ``every``, by the
    daemon on a schedule."""

    every: str | None = None  # e.g. 24h; None: only on demand
    chunk_rows: int = Field(default=5_000, ge=1)

    @field_validator("every")
    @classmethod
    def _every(cls, v: str | None) -> str | None:
        if v is not None and duration_seconds(v) <= 0:
            raise ValueError("every must be a positive duration")
        return v

    @property
    def every_seconds(self) -> float | None:
        return None if self.every is None else duration_seconds(self.every)


class PipelineConfig(_Model):
    source: str
    target: str
    tables: dict[str, TableConfig]
    audit: Literal["row", "transaction", "off"] = "row"
    # Audit rows older than this are purged by the daemon in small batches (None: kept).
    audit_retention_days: int | None = Field(default=None, ge=1)
    # A row that fails a rule or that the target refuses: dead_letter (kept in
    # cdc_sync_dead_letters, the stream goes on) or stop (halt with the reason).
    on_error: Literal["dead_letter", "stop"] = "dead_letter"
    batch: BatchConfig = BatchConfig()
    retry: RetryConfig = RetryConfig()
    # initial: copy existing rows the first time the pipeline runs, then stream from exactly
    # that point; never: stream only; always: copy again at every start (Debezium's words).
    snapshot: Literal["initial", "never", "always"] = "initial"
    snapshot_chunk_rows: int = Field(default=10_000, ge=1)
    # Source table the daemon writes watermarks into for re-snapshots while streaming
    # (DBLog); None: `cdc-sync snapshot --table` is refused with the DDL to create it.
    signal_table: str | None = None
    verify: VerifyConfig = VerifyConfig()

    @field_validator("signal_table")
    @classmethod
    def _signal_table(cls, v: str | None) -> str | None:
        if v is not None and not _TABLE.match(v):
            raise ValueError(f"expected schema.table ({_TABLE_RULE}), got {v!r}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _audit_mapping(cls, data: object) -> object:
        # `audit: {level: row, retention_days: 190}` is the long form of `audit: row`.
        if isinstance(data, dict) and isinstance(data.get("audit"), dict):
            data = dict(data)
            long_form = dict(data.pop("audit"))
            data["audit"] = long_form.pop("level", "row")
            if "retention_days" in long_form:
                data["audit_retention_days"] = long_form.pop("retention_days")
            if long_form:
                raise ValueError(f"audit: unknown keys {sorted(long_form)} (level, retention_days)")
        return data

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
            raise ValueError(f"expected schema.table names ({_TABLE_RULE}), got {bad}")
        return v


class MetricsConfig(_Model):
    """Prometheus ``/metrics`` plus ``/healthz`` and ``/readyz`` on one HTTP listener."""

    listen: str | None = None  # host:port, e.g. 127.0.0.1:9187; None: no endpoint
    ready_max_lag_seconds: float = Field(default=300.0, gt=0)  # /readyz fails above this

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            _host, sep, port = v.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, got {v!r}")
        return v


class AlertsConfig(_Model):
    """Where alerts go (none by default) and when a transient failure becomes one."""

    webhook: SecretStr | None = None  # POST JSON (Slack-compatible "text"); URL may hold a token
    command: str | None = None  # run with the alert as JSON on stdin
    after_attempts: int = Field(default=5, ge=1)  # consecutive failed attempts
    after_seconds: float = Field(default=300.0, gt=0)  # or failing for this long
    min_interval_seconds: float = Field(default=300.0, ge=0)  # per pipeline and kind
    timeout_seconds: float = Field(default=10.0, gt=0)


class LoggingConfig(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Model):
    sources: dict[str, SourceConfig]
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    # Two-way sync: each link adds one pipeline per direction to ``pipelines``.
    links: dict[str, LinkConfig] = Field(default_factory=dict)
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="before")
    @classmethod
    def _expand_links(cls, data: object) -> object:
        return expand(data) if isinstance(data, dict) else data

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

    def link_role(self, pipeline: str) -> LinkRole | None:
        """The link a pipeline belongs to (one of its two directions), or None."""
        return link_roles(self.links).get(pipeline) if self.links else None

    def slot_for(self, pipeline: str) -> str:
        src = self.sources[self.pipelines[pipeline].source]
        slot = src.slot if isinstance(src, PostgresSource) else None
        return slot or f"cdc_sync_{pipeline}"

    def publication_for(self, pipeline: str) -> str:
        src = self.sources[self.pipelines[pipeline].source]
        pub = src.publication if isinstance(src, PostgresSource) else None
        return pub or f"cdc_sync_{pipeline}"
