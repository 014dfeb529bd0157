"""Load YAML config: ${VAR} / ${file:/path} substitution, secret checks, key-path errors."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml
from pydantic import ValidationError

from cdc_sync.config.models import Config
from cdc_sync.errors import ConfigError

_REF = re.compile(r"\$\{([^}]*)\}")
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@:]*:([^@/]*)@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*(\S+)", re.IGNORECASE)
_SECRET_KEYS = {"dsn", "password", "url", "key"}


def _resolve(text: str, path: str, problems: list[str]) -> str:
    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.startswith("file:"):
            fname = ref[5:]
            try:
                return Path(fname).read_text().strip()
            except OSError as e:
                problems.append(f"{path}: cannot read {fname}: {e.strerror}")
                return ""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ref):
            problems.append(f"{path}: bad reference ${{{ref}}} (use ${{VAR}} or ${{file:/path}})")
            return ""
        if ref not in os.environ:
            problems.append(f"{path}: environment variable {ref} is not set")
            return ""
        return os.environ[ref]

    return _REF.sub(one, text)


def _literal_password(raw: str) -> bool:
    """True when the file itself (before substitution) holds a password in a DSN."""
    for rx in (_URL_PASSWORD, _KV_PASSWORD):
        m = rx.search(raw)
        if m and m.group(1) and not _REF.fullmatch(m.group(1).strip("'\"")):
            return True
    return False


def _walk(node: Any, path: str, problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, f"{path}.{k}" if path else str(k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if isinstance(node, str):
        if path.endswith(".hash.key") and not _REF.fullmatch(node.strip()):
            problems.append(
                f"{path}: a literal hash key in the config file is refused; "
                "use ${VAR} or ${file:/path}"
            )
            return node
        if path.rsplit(".", 1)[-1] in _SECRET_KEYS and _literal_password(node):
            problems.append(
                f"{path}: a literal password in the config file is refused; "
                "use ${VAR} or ${file:/path} for the DSN or its password"
            )
            return node
        return _resolve(node, path, problems)
    return node


def _loc(loc: tuple[int | str, ...]) -> str:
    # pydantic adds the discriminator value ('postgres') as a path element; users never wrote it
    parts = [str(p) for p in loc if p not in ("postgres", "mysql")]
    return ".".join(parts)


def load_config(path: str | Path) -> Config:
    """Parse and validate; raise ConfigError with one line per problem, key path first."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError([f"{p}: cannot read config: {e.strerror}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{p}: not valid YAML: {e}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{p}: expected a mapping with sources, targets, pipelines"])
    problems: list[str] = []
    data = _walk(raw, "", problems)
    problems += _reference_problems(data)
    problems += _tls_file_problems(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        lines = problems
        for err in e.errors(include_url=False, include_input=False):
            loc = _loc(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            for line in msg.split("\n"):
                own_path = line.startswith(("pipelines.", "sources.", "links."))
                text = line if own_path or not loc else f"{loc}: {line}"
                if text not in lines:
                    lines.append(text)
        raise ConfigError(lines) from None
    if not config.pipelines:
        problems.append("pipelines: at least one pipeline (or link) is required")
    if problems:
        raise ConfigError(problems)
    return config


_TLS_FILES = re.compile(
    r"(?:^|[?&\s])(sslrootcert|sslcert|sslkey|sslcrl|ssl_ca|ssl_cert|ssl_key)=([^&\s]+)"
)


def _tls_file_problems(data: dict[str, Any]) -> list[str]:
    """A CA / certificate / key file named in a DSN must exist: found at load, not as a
    connection error retried forever (the path is not secret; the DSN is not echoed)."""
    out = []
    for section in ("sources", "targets"):
        for name, c in (data.get(section) or {}).items():
            dsn = c.get("dsn") if isinstance(c, dict) else None
            if not isinstance(dsn, str):
                continue
            for param, value in _TLS_FILES.findall(dsn):
                fname = unquote(value)
                if fname != "system" and not Path(fname).is_file():
                    out.append(f"{section}.{name}.dsn: {param} file {fname} does not exist")
    return out


def _reference_problems(data: dict[str, Any]) -> list[str]:
    """Dangling source/target names, found even when other fields fail to validate."""
    out = []
    sources, targets = data.get("sources") or {}, data.get("targets") or {}
    for name, p in (data.get("pipelines") or {}).items():
        if not isinstance(p, dict):
            continue
        for key, known in (("source", sources), ("target", targets)):
            ref = p.get(key)
            if isinstance(ref, str) and isinstance(known, dict) and ref not in known:
                out.append(f"pipelines.{name}.{key}: no {key} named {ref!r}")
    return out
