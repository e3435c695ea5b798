"""Redis access from settings: the TLS context and credentials of every shard connection, and shards.

The one place that reads the Redis password file and the TLS files, so that every kind of connection
(the shared auto-pipelined ones, the event readers, the notification listener) is made alike: they
all go through the shard's `PipelinedClient`, which takes the `RedisAccess` built here.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from session_store.config import RedisSettings, SettingsError, ShardSettings, is_cluster_url
from session_store.storage._resp import RedisAccess
from session_store.storage.cluster import ClusterClient, GroupClient, group_names, group_partitions
from session_store.storage.memory import MemoryGuard
from session_store.storage.shard import CallObserver, Shard


def _read_password(path: Path) -> str:
    """The first line of the password file, without its line ending.

    Raises:
        SettingsError: the file cannot be read or holds no password.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # The error names the file, never its content.
        raise SettingsError(f"SESSION_STORE_REDIS_PASSWORD_FILE: cannot read {path}: {exc}") from None
    password = text.split("\n", 1)[0].rstrip("\r")
    if not password:
        raise SettingsError(f"SESSION_STORE_REDIS_PASSWORD_FILE: {path} holds no password on its first line")
    return password


def _refuse_prompt() -> bytes:
    """Password callback of `load_cert_chain`: an encrypted key fails instead of prompting on a tty."""
    return b""


def tls_context(redis: RedisSettings) -> ssl.SSLContext:
    """The TLS context of `rediss://` shards: the CA bundle (else the system trust store), the client
    certificate if any, the host-name check as configured, TLS 1.2 or newer.

    Raises:
        SettingsError: a TLS file cannot be read or is not what it should be.
    """
    try:
        context = ssl.create_default_context(cafile=str(redis.tls_ca_file) if redis.tls_ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"SESSION_STORE_REDIS_TLS_CA_FILE: cannot load {redis.tls_ca_file}: {exc}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = redis.tls_check_hostname
    if redis.tls_cert_file is not None and redis.tls_key_file is not None:
        try:
            context.load_cert_chain(redis.tls_cert_file, redis.tls_key_file, password=_refuse_prompt)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                "SESSION_STORE_REDIS_TLS_CERT_FILE/KEY_FILE: cannot load "
                f"{redis.tls_cert_file} with {redis.tls_key_file} (an encrypted key is not supported): {exc}"
            ) from None
    return context


def load_redis_access(redis: RedisSettings) -> RedisAccess:
    """Read the password file and build the TLS context once, for every shard of the node.

    Raises:
        SettingsError: the password file or a TLS file cannot be used (the message names the variable).
    """
    return RedisAccess(
        tls=tls_context(redis),
        username=redis.username,
        password=_read_password(redis.password_file) if redis.password_file is not None else "",
    )


def build_shards(
    redis: RedisSettings,
    shards: Sequence[ShardSettings],
    *,
    access: RedisAccess | None = None,
    observer: CallObserver | None = None,
    guard: bool = True,
) -> dict[str, Shard]:
    """One `Shard` per configured shard, each with the node's access settings and its own memory guard;
    a Redis Cluster (`redis+cluster://`) gives one `Shard` per group of partitions (storage/cluster.py).

    Args:
        redis: timeouts, connections, access and memory-guard settings.
        shards: the shards (the configured ones, or embedded ones).
        access: built by `load_redis_access` when None.
        observer: told of every shard call (metrics).
        guard: check each shard's eviction policy at connect and refuse creates near `maxmemory`
            (the service); tools that only rewrite existing data pass False.

    Raises:
        SettingsError: the password file or a TLS file cannot be used.
    """
    access = access if access is not None else load_redis_access(redis)

    def memory_guard() -> MemoryGuard | None:
        if not guard:
            return None
        return MemoryGuard(
            percent=redis.memory_guard_percent,
            poll_seconds=redis.memory_poll_seconds,
            allow_eviction=redis.allow_eviction,
        )

    built: dict[str, Shard] = {}
    for s in shards:
        if is_cluster_url(s.url):
            built.update(_cluster_groups(redis, s, access, observer, memory_guard))
            continue
        built[s.name] = Shard(
            s.name,
            s.url,
            connections=redis.connections,
            socket_timeout=redis.timeout_seconds,
            connect_timeout=redis.timeout_seconds,
            observer=observer,
            access=access,
            guard=memory_guard(),
        )
    return built


def _cluster_groups(
    redis: RedisSettings,
    cluster: ShardSettings,
    access: RedisAccess,
    observer: CallObserver | None,
    memory_guard: Callable[[], MemoryGuard | None],
) -> dict[str, Shard]:
    """The groups of a Redis Cluster store, one `Shard` each over one shared `ClusterClient`
    (storage/cluster.py): `<name>/0` .. `<name>/f`, each owning its partitions for good."""
    client = ClusterClient(
        cluster.url,
        timeout=redis.timeout_seconds,
        connect_timeout=redis.timeout_seconds,
        connections=redis.connections,
        access=access,
    )
    return {
        name: Shard(
            name,
            cluster.url,
            observer=observer,
            guard=memory_guard(),
            link=GroupClient(client, group),
            partitions=group_partitions(group, client.groups),
        )
        for group, name in enumerate(group_names(cluster.name, client.groups))
    }
