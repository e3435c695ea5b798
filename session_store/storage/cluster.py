"""The Redis Cluster backend: a store that is one Redis (or Valkey) Cluster instead of a list of shards.

The 4096 partitions form 16 (or 256) *groups*; every key of a group carries the group's hash tag, so
a group lives in one hash slot (storage/keys.py, "grouped layout"). Each group is an ordinary `Shard`
to everything above this module (the router and the ownership guard of every script, the sweeper,
the event hub, the policies written to every shard), with its own per-shard keys: its event stream,
due index, counters. What differs is its connection, a `GroupClient`: it maps every key of every
command to the grouped layout and sends the command to whichever node serves the group's slot now.

Placement and resharding are the cluster's. A slot migrated with `redis-cli --cluster reshard` (or a
failover) moves a whole group with everything in it; `ClusterClient` follows the cluster's answers:
MOVED (the slot has a new owner: remember it, refresh the slot map, send there), ASK (the slot is
being migrated and the keys are already on the target: ASKING + the command there) and TRYAGAIN (a
multi-key command while its keys are split between source and target: wait, then again). All three
prove the command did not run, so following them is always safe. A connection that fails is not
retried here (a script may have run); it makes the client re-read the slot map, since a failover
is the likely cause. Connections are this project's auto-pipelined ones (`storage/_resp.py`), one
`PipelinedClient` per primary, shared by the groups it serves (docs/architecture.md, "The Redis
Cluster backend").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any
from urllib.parse import quote

import structlog
from redis import exceptions as redis_errors
from redis.crc import key_slot

from session_store.config import parse_cluster_url
from session_store.storage import keys
from session_store.storage._resp import Arg, DedicatedConnection, PipelinedClient, RedisAccess

log = structlog.get_logger(__name__)

SLOT_COUNT = 16384
MAX_REDIRECTS = 5
"""MOVED/ASK hops one command may follow (a slot moves once per migration; more means a loop)."""
TRYAGAIN_BUDGET_SECONDS = 0.5
"""How long one command waits out TRYAGAIN/CLUSTERDOWN here before the caller sees it (the router
then retries it as a frozen partition, so a slot migration is waited out for several seconds)."""
TRYAGAIN_FIRST_WAIT_SECONDS = 0.005
TRYAGAIN_MAX_WAIT_SECONDS = 0.05
REFRESH_MIN_INTERVAL_SECONDS = 0.1
"""Slot-map reads are at most this frequent (a burst of MOVED answers costs one CLUSTER SLOTS)."""

Address = tuple[str, int]


def _address(text: str, fallback: Address) -> Address:
    """`host:port` of a MOVED/ASK answer; an empty host (an unknown endpoint) means the asked node's."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    return (host or fallback[0], int(port))


class ClusterClient:
    """Connections to every primary of one Redis Cluster and the slot map that says which serves what.

    Shared by the groups of one store (`GroupClient`); closed when the last of them closes.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        connect_timeout: float,
        connections: int = 2,
        access: RedisAccess | None = None,
    ) -> None:
        """Parse the `redis+cluster://` URL; nothing connects until the first command.

        Raises:
            SettingsError: not a well-formed cluster URL.
        """
        target = parse_cluster_url(url)
        self.url = url
        self.groups = target.groups
        self._seeds = list(target.nodes)
        self._scheme = "rediss" if target.tls else "redis"
        # The URL's credentials apply to every node; each node's client gets them in its own URL.
        self._userinfo = ""
        if target.password is not None:
            self._userinfo = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
        elif target.username is not None:
            self._userinfo = f"{quote(target.username, safe='')}@"
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._connections = connections
        self._access = access
        self._nodes: dict[Address, PipelinedClient] = {}
        self._owners: list[Address | None] = [None] * SLOT_COUNT
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = float("-inf")
        self._background: set[asyncio.Task[None]] = set()
        self._users = 0

    def node(self, address: Address) -> PipelinedClient:
        """The client of one node (made on first use)."""
        client = self._nodes.get(address)
        if client is None:
            host = f"[{address[0]}]" if ":" in address[0] else address[0]
            client = PipelinedClient(
                f"{self._scheme}://{self._userinfo}{host}:{address[1]}/0",
                timeout=self._timeout,
                connect_timeout=self._connect_timeout,
                connections=self._connections,
                access=self._access,
            )
            self._nodes[address] = client
        return client

    def primaries(self) -> list[Address]:
        """The primaries the slot map names (empty before the first refresh)."""
        return sorted({a for a in self._owners if a is not None})

    async def owner(self, slot: int) -> Address:
        """The node serving a slot, reading the slot map first when it is not known yet.

        Raises:
            redis.exceptions.ConnectionError: no node answered, or no node serves the slot.
        """
        address = self._owners[slot]
        if address is None:
            await self.refresh(force=True)
            address = self._owners[slot]
            if address is None:
                raise redis_errors.ConnectionError(f"no node of the cluster serves slot {slot}")
        return address

    async def refresh(self, *, force: bool = False) -> None:
        """Read the slot map (CLUSTER SLOTS) from the first node that answers: known primaries first,
        then the URL's nodes. Without `force`, skipped when read less than 0.1 s ago.

        Raises:
            redis.exceptions.ConnectionError: no node answered.
        """
        loop = asyncio.get_running_loop()
        async with self._refresh_lock:
            if not force and loop.time() - self._refreshed_at < REFRESH_MIN_INTERVAL_SECONDS:
                return
            candidates = list(dict.fromkeys([*self.primaries(), *self._seeds]))
            error: Exception | None = None
            for address in candidates:
                try:
                    reply = await self.node(address).execute("CLUSTER", "SLOTS")
                except (redis_errors.RedisError, OSError) as exc:
                    error = exc
                    continue
                owners: list[Address | None] = [None] * SLOT_COUNT
                for entry in reply:
                    host, port = str(entry[2][0]), int(entry[2][1])
                    primary = (address[0] if host in ("", "?") else host, port)
                    for slot in range(int(entry[0]), int(entry[1]) + 1):
                        owners[slot] = primary
                self._owners = owners
                self._refreshed_at = loop.time()
                return
            raise redis_errors.ConnectionError(f"no node of the cluster answered CLUSTER SLOTS: {error}")

    def _refresh_soon(self) -> None:
        """Re-read the slot map in the background (after a MOVED, or a node that failed)."""

        async def run() -> None:
            try:
                await self.refresh()
            except redis_errors.RedisError as exc:
                log.warning("cluster_slot_map_refresh_failed", error=str(exc))

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def execute(self, slot: int, *args: Arg) -> Any:
        """Send one command to the node serving `slot`, following MOVED and ASK and waiting out
        TRYAGAIN and CLUSTERDOWN (bounded).

        Raises:
            redis.exceptions.ResponseError: Redis answered an error (a TRYAGAIN/CLUSTERDOWN/MOVED one
                when the bounds ran out).
            redis.exceptions.ConnectionError, redis.exceptions.TimeoutError: the node failed; the
                command may have run.
        """
        address = await self.owner(slot)
        asking = False
        redirects = 0
        waited, wait = 0.0, TRYAGAIN_FIRST_WAIT_SECONDS
        while True:
            client = self.node(address)
            try:
                if asking:
                    return await client.execute_asking(*args)
                return await client.execute(*args)
            except redis_errors.NoScriptError:
                raise
            except redis_errors.ResponseError as exc:
                kind, _, rest = str(exc).partition(" ")
                if kind in ("MOVED", "ASK") and redirects < MAX_REDIRECTS:
                    redirects += 1
                    target = _address(rest.partition(" ")[2], address)
                    if kind == "MOVED":
                        self._owners[slot] = target
                        self._refresh_soon()
                    address, asking = target, kind == "ASK"
                    continue
                if kind in ("TRYAGAIN", "CLUSTERDOWN") and waited < TRYAGAIN_BUDGET_SECONDS:
                    await asyncio.sleep(wait)
                    waited += wait
                    wait = min(wait * 2, TRYAGAIN_MAX_WAIT_SECONDS)
                    address, asking = await self.owner(slot), False
                    continue
                raise
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError):
                # Most likely a failover: the slots of the failed node get a new owner soon.
                self._refresh_soon()
                raise

    async def broadcast(self, *args: Arg) -> Any:
        """Send a keyless command (SCRIPT LOAD) to every node known: the slot map's primaries and every
        node talked to. A script loaded on the group's owner alone could miss during a failover: a
        stale map sends the load to the old primary while the EVALSHA is redirected to the new one.

        Returns:
            The first node's reply (they are alike: a script's SHA).

        Raises:
            As `execute`, when no node took it.
        """
        targets = list(dict.fromkeys([*self.primaries(), *self._nodes]))
        if not targets:
            await self.refresh(force=True)
            targets = self.primaries()
        replies = await asyncio.gather(
            *(self.node(a).execute(*args) for a in targets), return_exceptions=True
        )
        for reply in replies:
            if not isinstance(reply, BaseException):
                return reply
        raise replies[0]

    async def dedicated(self, slot: int, *, reply_timeout: float, raw: bool = False) -> DedicatedConnection:
        """A connection of its own to the node serving `slot` now (blocking reads).

        Raises:
            redis.exceptions.ConnectionError: the node (or every node, for the slot map) failed.
        """
        address = await self.owner(slot)
        try:
            return await self.node(address).dedicated(reply_timeout=reply_timeout, raw=raw)
        except (redis_errors.ConnectionError, OSError):
            self._refresh_soon()
            raise

    def moved(self, slot: int, answer: str, asked: Address | None = None) -> None:
        """Take note of a MOVED answer met outside `execute` (on a dedicated connection)."""
        kind, _, rest = answer.partition(" ")
        if kind == "MOVED":
            self._owners[slot] = _address(rest.partition(" ")[2], asked or ("", 0))
        self._refresh_soon()

    def use(self) -> None:
        """One more group uses this client (it closes when the last one closes it)."""
        self._users += 1

    async def close(self) -> None:
        """Release one group's use; the last one closes every node's connections."""
        self._users -= 1
        if self._users > 0:
            return
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(client.close() for client in self._nodes.values()))
        self._nodes.clear()


# --- commands and where their keys are -------------------------------------------------------

_FIRST_ARG_KEY = frozenset(
    {
        "DUMP", "EXPIRE", "EXPIRETIME", "GET", "GETRANGE", "HDEL", "HEXISTS", "HGET", "HGETALL",
        "HINCRBY", "HKEYS", "HLEN", "HMGET", "HSET", "HSETNX", "INCR", "INCRBY", "LRANGE", "PERSIST",
        "PEXPIRE", "PEXPIREAT", "PEXPIRETIME", "PTTL", "RESTORE", "SADD", "SCARD", "SET", "SISMEMBER",
        "SMEMBERS", "SREM", "STRLEN", "TTL", "TYPE", "XADD", "XLEN", "XRANGE", "XREVRANGE", "XTRIM",
        "ZADD", "ZCARD", "ZCOUNT", "ZMSCORE", "ZRANGE", "ZRANGEBYLEX", "ZRANGEBYSCORE", "ZREM",
        "ZREMRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZSCORE",
    }
)  # fmt: skip
_ALL_ARGS_KEYS = frozenset({"DEL", "EXISTS", "TOUCH", "UNLINK"})
_NO_KEYS = frozenset({"CLIENT", "CONFIG", "INFO", "PING", "SCRIPT", "TIME"})


def group_command(args: Sequence[Arg], group: int, groups: int) -> tuple[Arg, ...]:  # noqa: PLR0911 - one return per shape of command reads best
    """A command with every key (and a SCAN pattern) in the grouped layout of `group`.

    Raises:
        ValueError: a command whose key positions this backend does not know (a programming error:
            every command the service sends is listed here).
    """
    name = str(args[0]).upper()

    def key(arg: Arg) -> str:
        return keys.in_group(str(arg), group, groups)

    if name in _FIRST_ARG_KEY:
        return (args[0], key(args[1]), *args[2:])
    if name in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO"):
        count = int(args[2])
        return (*args[:3], *(key(a) for a in args[3 : 3 + count]), *args[3 + count :])
    if name in _ALL_ARGS_KEYS:
        return (args[0], *(key(a) for a in args[1:]))
    if name == "XINFO":
        return (args[0], args[1], key(args[2]), *args[3:])
    if name == "XREAD":
        upper = [str(a).upper() for a in args]
        start = upper.index("STREAMS") + 1
        count = (len(args) - start) // 2
        streams = tuple(key(a) for a in args[start : start + count])
        return (*args[:start], *streams, *args[start + count :])
    if name == "SCAN":
        out = list(args)
        for i, arg in enumerate(args):
            if str(arg).upper() == "MATCH":
                out[i + 1] = keys.pattern_in_group(str(args[i + 1]), group, groups)
        return tuple(out)
    if name == "DBSIZE":  # the keys of this group: its slot's, not the whole node's
        return ("CLUSTER", "COUNTKEYSINSLOT", key_slot(keys.group_tag(group, groups).encode()))
    if name in _NO_KEYS:
        return tuple(args)
    raise ValueError(f"the cluster backend does not know the keys of {name}")


class GroupDedicated:
    """A dedicated connection of one group: keys mapped like `GroupClient`; a MOVED answer closes it
    (the next one goes to the slot's new owner)."""

    def __init__(self, group: GroupClient, conn: DedicatedConnection) -> None:
        """Wrap a connection opened to the node that served the group's slot."""
        self._group = group
        self._conn = conn

    @property
    def closed(self) -> bool:
        """Whether the connection was closed."""
        return self._conn.closed

    async def execute(self, *args: Arg) -> Any:
        """Send one command.

        Raises:
            redis.exceptions.ConnectionError: also when the slot moved (MOVED/ASK): reconnect.
            redis.exceptions.ResponseError, redis.exceptions.TimeoutError: as `DedicatedConnection`.
        """
        try:
            return await self._conn.execute(*self._group.translate(args))
        except redis_errors.ResponseError as exc:
            if str(exc).startswith(("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")):
                self._group.cluster.moved(self._group.slot, str(exc))
                self._conn.close()
                raise redis_errors.ConnectionError(f"slot {self._group.slot} moved: {exc}") from exc
            raise

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class GroupClient:
    """The connection of one group (virtual shard): commands in the grouped layout, sent to the node
    that serves the group's slot."""

    def __init__(self, cluster: ClusterClient, group: int) -> None:
        """One group of `cluster`'s partitions (0 .. groups-1)."""
        self.cluster = cluster
        self.group = group
        self.groups = cluster.groups
        self.slot = key_slot(keys.group_tag(group, cluster.groups).encode())
        cluster.use()

    @property
    def db(self) -> int:
        """Always 0: a cluster has no other database."""
        return 0

    def translate(self, args: Sequence[Arg]) -> tuple[Arg, ...]:
        """The command in this group's layout (see `group_command`)."""
        return group_command(args, self.group, self.groups)

    async def execute(self, *args: Arg) -> Any:
        """Send one command (batched with the others of this loop turn to the same node).

        Raises:
            As `ClusterClient.execute`.
        """
        if len(args) > 1 and str(args[0]).upper() == "SCRIPT" and str(args[1]).upper() == "LOAD":
            return await self.cluster.broadcast(*args)
        return await self.cluster.execute(self.slot, *self.translate(args))

    async def dedicated(self, *, reply_timeout: float, raw: bool = False) -> GroupDedicated:
        """A connection of its own to the node serving the group now.

        Raises:
            redis.exceptions.ConnectionError: the node failed.
        """
        conn = await self.cluster.dedicated(self.slot, reply_timeout=reply_timeout, raw=raw)
        return GroupDedicated(self, conn)

    async def subscribe(self, channel: str) -> AsyncGenerator[str, None]:
        """Not offered: keyspace notifications are per node, and a node's slots change.

        Raises:
            redis.exceptions.ConnectionError: always (settings refuse notifications with a cluster).
        """
        raise redis_errors.ConnectionError(f"no subscription to {channel} with the cluster backend")
        yield ""  # pragma: no cover - makes this an async generator like PipelinedClient.subscribe

    async def close(self) -> None:
        """Release this group's use of the shared cluster client."""
        await self.cluster.close()


def group_partitions(group: int, groups: int) -> range:
    """The partitions of a group: those whose first hex digit(s) are the group's number."""
    size = 4096 // groups
    return range(group * size, (group + 1) * size)


def group_names(name: str, groups: int) -> list[str]:
    """The shard names of a cluster's groups: `<name>/<group in hex>` (`cluster/0` .. `cluster/f`)."""
    width = keys.group_width(groups)
    return [f"{name}/{g:0{width}x}" for g in range(groups)]
