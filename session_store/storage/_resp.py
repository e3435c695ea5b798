"""A small Redis connection with automatic pipelining: every command issued in one event-loop turn
leaves in one write, and replies are matched to callers in order.

redis.asyncio spends ~100 µs of client CPU per call and one round trip per connection at a time;
batching what the event loop has gathered costs ~10 µs per call and lets Redis answer many calls
per wake-up (docs/benchmarks.md). Replies are parsed by hiredis.

Failure rules: when the oldest reply on a connection is more than `timeout` late, the connection is
closed and every call waiting on it fails with TimeoutError (a watchdog checks four times per
timeout, so a late reply is noticed within 1.25 times the timeout); the next call reconnects. A caller
cancelled while waiting does not break the order: its reply is read and dropped.

Every connection this module opens (shared, dedicated, subscriber) is made the same way
(`PipelinedClient._open_stream`, then `_auth_command`): TLS for rediss:// with the `RedisAccess`
context, then AUTH (and SELECT). Credentials are never part of an error message or a log line.

Where a connection goes is decided when it opens, never per call: the URL's host, or for a Sentinel
group (`redis+sentinel://`) the master its sentinels name (`SentinelMaster`). A connection that
answers READONLY is closed (its server was demoted to a replica); the next call reconnects and asks
again. A Sentinel group's client also listens to the sentinels and closes every connection the
moment a failover starts or the master changes, so no write reaches a demoted master (docs/operations.md,
"Sentinel").
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
import structlog
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff

from session_store.config import SENTINEL_SCHEMES, parse_sentinel_url

log = structlog.get_logger(__name__)

Arg = str | int | float | bytes

FAILOVER_CHANNELS = ("+try-failover", "+switch-master")
"""Sentinel events that close a group's connections: a failover starts (the old master may be
demoted any moment), or the master changed. Every sentinel publishes its own; we listen to all."""

REFUSED_RESOLUTION_SECONDS = 0.1
"""How long a failed master discovery is answered from memory, so that a burst of callers during a
failover costs the sentinels one round of questions, not one per caller."""

_AUTH_REFUSED = ("WRONGPASS", "ERR AUTH")
"""Error replies to AUTH that mean "these credentials are refused" rather than a protocol failure."""


@dataclass(frozen=True, kw_only=True)
class RedisAccess:
    """How every connection to a shard is secured: TLS for rediss:// URLs, and the ACL credentials.

    A URL's own `user:password@` wins over `username`/`password` for that shard. `tls` None means the
    system trust store with the host-name check (the default of `ssl.create_default_context`).
    """

    tls: ssl.SSLContext | None = None
    username: str = ""
    password: str = field(default="", repr=False)


def _error_reply(message: str) -> redis_errors.ResponseError:
    if message.startswith("NOSCRIPT"):
        return redis_errors.NoScriptError(message)
    return redis_errors.ResponseError(message)


class _Connection:
    """One TCP connection with a FIFO of waiting callers."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout: float,
        where: str,
        *,
        raw: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self._where = where
        self._loop = asyncio.get_running_loop()
        self._pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._sent_at: collections.deque[float] = collections.deque()
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        # raw: bulk replies stay bytes (DUMP payloads are binary); else text, as every caller reads.
        self._parser = hiredis.Reader() if raw else hiredis.Reader(encoding="utf-8", errors="replace")
        self.closed = False
        peer = writer.get_extra_info("peername")
        self.peer: tuple[str, int] | None = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        """The server's address (None for a unix socket)."""
        self._task = self._loop.create_task(self._read_replies())
        # One watchdog per connection instead of a timer per call: it checks the oldest reply.
        self._watchdog = self._loop.call_later(self._timeout / 4, self._check_overdue)

    def send(self, args: tuple[Arg, ...]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.closed:
            future.set_exception(redis_errors.ConnectionError("connection closed"))
            return future
        self._buffer.append(hiredis.pack_command(args))  # type: ignore[arg-type]  # the stub types a 1-tuple; any length works
        self._pending.append(future)
        self._sent_at.append(self._loop.time())
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _check_overdue(self) -> None:
        if self.closed:
            return
        if self._sent_at and self._loop.time() - self._sent_at[0] > self._timeout:
            self.close(redis_errors.TimeoutError(f"no reply from {self._where} within {self._timeout} s"))
            return
        self._watchdog = self._loop.call_later(self._timeout / 4, self._check_overdue)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.closed or not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        try:
            self._writer.write(data)
        except (OSError, RuntimeError) as exc:
            self.close(redis_errors.ConnectionError(f"write failed: {exc}"))

    async def _read_replies(self) -> None:
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    raise redis_errors.ConnectionError("connection closed by server")
                self._parser.feed(data)
                while True:
                    reply = self._parser.gets()
                    if reply is False:
                        break
                    future = self._pending.popleft()
                    self._sent_at.popleft()
                    if future.done():  # its caller was cancelled or timed out: drop the reply
                        continue
                    if isinstance(reply, hiredis.ReplyError):
                        future.set_exception(_error_reply(str(reply)))
                        if str(reply).startswith("READONLY"):
                            # Its server is a replica now: the next call reconnects to the master.
                            self.close(redis_errors.ConnectionError(f"{self._where} became a replica"))
                            return
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            self.close(redis_errors.ConnectionError("connection closed"))
            raise
        except (OSError, redis_errors.RedisError, hiredis.ProtocolError, IndexError) as exc:
            error = (
                exc if isinstance(exc, redis_errors.RedisError) else redis_errors.ConnectionError(str(exc))
            )
            self.close(error)

    def close(self, error: redis_errors.RedisError) -> None:
        if self.closed:
            return
        self.closed = True
        self._watchdog.cancel()
        self._sent_at.clear()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
        self._writer.close()
        if self._task is not asyncio.current_task():
            self._task.cancel()


class _TLSConnection(RedisConnection):
    """A redis-py connection with our TLS context (redis-py builds its own from file names)."""

    def __init__(self, *, tls_context: ssl.SSLContext, **kwargs: Any) -> None:
        self._tls_context = tls_context
        super().__init__(**kwargs)

    def _connection_arguments(self) -> Mapping[str, Any]:
        return {**super()._connection_arguments(), "ssl": self._tls_context}


class _SentinelGroup(Sentinel):
    """redis-py's Sentinel, with our connections and a stricter choice of the master.

    `Sentinel.discover_master` takes the first sentinel that names a master. During and just after a
    failover the sentinels disagree: the one running it knows first, the others learn from its hello
    messages up to a couple of seconds later, and meanwhile name the old master, which stays writable
    until Sentinel reconfigures it (~10 s) — writes there are lost. So every sentinel is asked, a
    failover in progress anywhere is a refusal, and the answer of the newest configuration epoch wins,
    as among the sentinels themselves.
    """

    def __init__(self, sentinels: list[Redis]) -> None:
        super().__init__([])
        self.sentinels = sentinels

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        """The master's address by the newest configuration any reachable sentinel has.

        Raises:
            MasterNotFoundError: no sentinel answered, none knows the name, or they see its master down.
            redis.exceptions.ConnectionError: a failover of the group is in progress.
        """
        # SENTINEL MASTERS, parsed by redis-py into {name: state}; typed loosely upstream.
        replies: list[Any] = await asyncio.gather(
            *(sentinel.sentinel_masters() for sentinel in self.sentinels), return_exceptions=True
        )
        states: list[dict[str, Any]] = []
        errors: list[str] = []
        for reply in replies:
            if isinstance(reply, redis_errors.RedisError | OSError):
                errors.append(str(reply))
            elif isinstance(reply, BaseException):
                raise reply
            elif service_name in reply:
                states.append(reply[service_name])
        if not states and errors:
            raise MasterNotFoundError(f"no sentinel of {service_name!r} answered: {errors[0]}")
        if not states:
            raise MasterNotFoundError(f"no sentinel monitors {service_name!r}")
        for state in states:
            flags = state["flags"]
            if "failover_in_progress" in (flags.split(",") if isinstance(flags, str) else flags):
                raise redis_errors.ConnectionError(f"a failover of {service_name!r} is in progress")
        newest = max(int(state["config-epoch"]) for state in states)
        for state in states:
            if int(state["config-epoch"]) == newest and self.check_master_state(state, service_name):
                return str(state["ip"]), int(state["port"])
        raise MasterNotFoundError(f"the sentinels of {service_name!r} see its master down")


class SentinelMaster:
    """The master of one Sentinel group: found by asking its sentinels, followed through failovers.

    Sentinel connections are redis-py's (one small pool per sentinel), made like ours: TLS with the
    same context for rediss+sentinel://, and the master's credentials only if the URL asks for them
    (`sentinel_auth=same`). A sentinel that does not answer costs at most `timeout`; they are asked
    together.
    """

    def __init__(
        self,
        sentinels: tuple[tuple[str, int], ...],
        master_name: str,
        *,
        tls: ssl.SSLContext | None,
        username: str | None,
        password: str | None,
        timeout: float,
    ) -> None:
        """Remember where the sentinels are; nothing connects until the first question."""
        self.master_name = master_name
        self.addresses = sentinels
        self._tls = tls
        self._username = username
        self._password = password
        self._timeout = timeout
        self._group: _SentinelGroup | None = None
        self._asking: asyncio.Future[tuple[str, int]] | None = None
        self._refused: tuple[float, str] | None = None
        self.address: tuple[str, int] | None = None
        """The master's address at the last successful discovery."""

    def _sentinels(self) -> _SentinelGroup:
        if self._group is None:
            clients = []
            for host, port in self.addresses:
                kwargs: dict[str, Any] = {
                    "host": host,
                    "port": port,
                    "username": self._username,
                    "password": self._password,
                    "socket_timeout": self._timeout,
                    "socket_connect_timeout": self._timeout,
                    # One try: the caller decides about retrying, and a failover is no time to wait.
                    "retry": Retry(NoBackoff(), 0),
                    "decode_responses": True,
                }
                if self._tls is not None:
                    kwargs |= {"connection_class": _TLSConnection, "tls_context": self._tls}
                clients.append(Redis.from_pool(ConnectionPool(**kwargs)))
            self._group = _SentinelGroup(clients)
        return self._group

    async def discover(self) -> tuple[str, int]:
        """Ask the sentinels for the master's address; callers at the same moment share one answer.

        Raises:
            redis.exceptions.ConnectionError: no master now (sentinels unreachable, master down, a
                failover in progress); the same refusal is repeated for `REFUSED_RESOLUTION_SECONDS`.
        """
        loop = asyncio.get_running_loop()
        if self._refused is not None and loop.time() - self._refused[0] < REFUSED_RESOLUTION_SECONDS:
            raise redis_errors.ConnectionError(self._refused[1])
        if self._asking is None or self._asking.done():
            self._asking = loop.create_task(self._discover())
            # Retrieved here too, in case every caller waiting on it was cancelled meanwhile.
            self._asking.add_done_callback(lambda task: task.cancelled() or task.exception())
        asking = self._asking
        try:
            return await asyncio.shield(asking)
        finally:
            if asking.done() and self._asking is asking:
                self._asking = None

    async def _discover(self) -> tuple[str, int]:
        try:
            address = await self._sentinels().discover_master(self.master_name)
        except redis_errors.ConnectionError as exc:
            message = f"master {self.master_name!r}: {exc}"
            self._refused = (asyncio.get_running_loop().time(), message)
            raise redis_errors.ConnectionError(message) from None
        self._refused = None
        if address != self.address:
            log.info("sentinel_master_found", master=self.master_name, address=f"{address[0]}:{address[1]}")
            self.address = address
        return address

    async def follow(self, on_failover: Callable[[str, tuple[str, int] | None], None]) -> None:
        """Listen to every sentinel's failover events of this group until cancelled.

        Args:
            on_failover: called with the event's channel when a failover starts (and None) or the
                master changed (and the new master's address).
        """
        await asyncio.gather(*(self._listen(client, on_failover) for client in self._sentinels().sentinels))

    async def _listen(
        self, sentinel: Redis, on_failover: Callable[[str, tuple[str, int] | None], None]
    ) -> None:
        delay = 0.1
        while True:
            pubsub = sentinel.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*FAILOVER_CHANNELS)
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    # "+try-failover": "master <name> <ip> <port>"; "+switch-master": "<name> <old> <new>".
                    words = str(message["data"]).split()
                    channel = str(message["channel"])
                    if channel == "+switch-master" and words[:1] == [self.master_name] and len(words) == 5:
                        self._refused = None  # the next discovery asks at once
                        log.warning("sentinel_switch_master", master=self.master_name, to=words[3:5])
                        on_failover(channel, (words[3], int(words[4])))
                    elif channel == "+try-failover" and words[:2] == ["master", self.master_name]:
                        log.warning("sentinel_failover_started", master=self.master_name)
                        on_failover(channel, None)
            except (redis_errors.RedisError, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                await pubsub.aclose()

    async def aclose(self) -> None:
        """Close the connections to the sentinels."""
        if self._group is not None:
            await self._group.aclose()
            self._group = None


class PipelinedClient:
    """Auto-pipelined commands to one Redis server over a few lazily (re)opened connections."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        connect_timeout: float,
        connections: int = 2,
        access: RedisAccess | None = None,
    ) -> None:
        """Parse `url` (redis://, rediss://, unix:// or a Sentinel group's redis+sentinel:// or
        rediss+sentinel://, with optional user:password@); nothing connects yet.

        Args:
            access: TLS context (used for rediss:// only) and credentials for URLs that carry none.

        Raises:
            ValueError: not a redis:// URL.
        """
        access = access or RedisAccess()
        parts = urlsplit(url)
        query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
        self._sentinel: SentinelMaster | None = None
        if parts.scheme in SENTINEL_SCHEMES:
            target = parse_sentinel_url(url)
            self._host, self._port, self._path = "", 0, ""
            self._db = target.db
            self._where = f"master {target.master_name!r}"
        elif parts.scheme in ("redis", "rediss") and parts.hostname:
            self._host, self._port, self._path = parts.hostname, parts.port or 6379, ""
            self._db = int(parts.path.lstrip("/") or 0)
            self._where = f"{self._host}:{self._port}"
        elif parts.scheme == "unix" and parts.path:
            self._host, self._port, self._path = "", 0, parts.path
            self._db = int(query.get("db", "0"))
            self._where = parts.path
        else:
            raise ValueError(
                "expected redis://host:port[/db], rediss://host:port[/db] or unix:///path[?db=N]"
            )
        # rediss: TLS with the configured context (CA, client certificate, host-name check), else the
        # system trust store. The scheme alone decides: settings refuse TLS files with redis:// URLs.
        tls = parts.scheme in ("rediss", "rediss+sentinel")
        self._ssl = (access.tls or ssl.create_default_context()) if tls else None
        # The URL's credentials are the more specific: they win over the configured ones.
        self._username = unquote(parts.username) if parts.username else (access.username or None)
        self._password = unquote(parts.password) if parts.password else (access.password or None)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._slots: list[_Connection | None] = [None] * max(1, connections)
        self._locks = [asyncio.Lock() for _ in self._slots]
        self._next = 0
        if parts.scheme in SENTINEL_SCHEMES:
            self._sentinel = SentinelMaster(
                target.sentinels,
                target.master_name,
                tls=self._ssl,
                username=self._username if target.sentinel_auth else None,
                password=self._password if target.sentinel_auth else None,
                timeout=connect_timeout,
            )
        # What a failover must close: every open connection (shared and dedicated) and subscription.
        self._opened: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._subscriptions: set[asyncio.StreamWriter] = set()
        self._following: asyncio.Task[None] | None = None
        # Counts failover events: a connection being opened while one arrives is not used.
        self._failovers = 0

    @property
    def db(self) -> int:
        """The database number the URL selects."""
        return self._db

    async def _connection(self) -> _Connection:
        index = self._next
        self._next = (self._next + 1) % len(self._slots)
        conn = self._slots[index]
        if conn is not None and not conn.closed:
            return conn
        async with self._locks[index]:
            conn = self._slots[index]
            if conn is None or conn.closed:
                conn = await self._open()
                self._slots[index] = conn
            return conn

    @property
    def sentinel(self) -> SentinelMaster | None:
        """The Sentinel group this client follows; None for a fixed address."""
        return self._sentinel

    def close_connections(self, reason: str, *, keep: tuple[str, int] | None = None) -> None:
        """Close every open connection and subscription now; waiting callers get ConnectionError.

        The next call reconnects (to wherever the address resolves then).

        Args:
            keep: leave the connections to this address open (the master a failover ended on).
        """
        error = redis_errors.ConnectionError(f"{self._where}: {reason}")
        for conn in list(self._opened):
            if keep is None or conn.peer != keep:
                conn.close(error)
        for writer in list(self._subscriptions):
            peer = writer.get_extra_info("peername")
            if keep is None or not isinstance(peer, tuple) or (str(peer[0]), int(peer[1])) != keep:
                writer.close()

    def _on_failover(self, event: str, master: tuple[str, int] | None) -> None:
        self._failovers += 1
        self.close_connections(f"sentinel event {event}", keep=master)

    async def _open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._path:
            opening: Any = asyncio.open_unix_connection(self._path)
        elif self._sentinel is not None:
            if self._following is None or self._following.done():
                self._following = asyncio.get_running_loop().create_task(
                    self._sentinel.follow(self._on_failover)
                )
            host, port = await self._sentinel.discover()
            self._where = f"master {self._sentinel.master_name!r} at {host}:{port}"
            opening = asyncio.open_connection(host, port, ssl=self._ssl)
        else:
            opening = asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        try:
            return await asyncio.wait_for(opening, self._connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise redis_errors.ConnectionError(f"cannot connect to {self._where}: {exc}") from exc

    def _auth_command(self) -> tuple[Arg, ...] | None:
        if self._password is None:
            return None
        return ("AUTH", self._username or "default", self._password)

    def _auth_error(self, reply: redis_errors.ResponseError) -> redis_errors.RedisError:
        """The error of a refused AUTH: AuthenticationError (a ConnectionError), never the password."""
        text = str(reply)
        if text.startswith(_AUTH_REFUSED):
            user = self._username or "default"
            return redis_errors.AuthenticationError(f"{self._where} refused AUTH as {user!r}: {text}")
        return reply

    async def _open(self, reply_timeout: float | None = None, *, raw: bool = False) -> _Connection:
        failovers = self._failovers
        reader, writer = await self._open_stream()
        late = self._timeout if reply_timeout is None else reply_timeout
        conn = _Connection(reader, writer, late, self._where, raw=raw)
        auth = self._auth_command()
        try:
            if auth is not None:
                try:
                    await conn.send(auth)
                except redis_errors.ResponseError as exc:
                    raise self._auth_error(exc) from None
            if self._db:
                await conn.send(("SELECT", self._db))
            if self._sentinel is not None:
                await self._check_master(conn)
                if failovers != self._failovers:
                    raise redis_errors.ConnectionError(f"{self._where}: a failover began while connecting")
        except BaseException:
            conn.close(redis_errors.ConnectionError("connection setup failed"))
            raise
        self._opened.add(conn)
        return conn

    async def _check_master(self, conn: _Connection) -> None:
        """Refuse a server the sentinels named that is not (or no longer) a master.

        INFO rather than ROLE: our least-privilege ACL allows INFO (the memory guard reads it), not
        ROLE (@dangerous). Where INFO is refused too, the sentinels' word is taken.

        Raises:
            redis.exceptions.ConnectionError: the server is a replica.
        """
        try:
            reply = await conn.send(("INFO", "replication"))
            info = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
        except redis_errors.ResponseError as exc:
            if str(exc).startswith("NOPERM"):
                return
            raise
        if "role:master" not in info.split():
            raise redis_errors.ConnectionError(f"{self._where} is not a master (yet)")

    async def dedicated(self, *, reply_timeout: float, raw: bool = False) -> DedicatedConnection:
        """Open a connection of its own (TLS, AUTH and SELECT as the shared ones), for blocking reads
        or binary replies.

        Args:
            reply_timeout: how late a reply may be before the connection is closed (a blocking
                command's block time plus some slack).
            raw: replies as bytes, not text (DUMP payloads for moving keys).

        Raises:
            redis.exceptions.AuthenticationError: the server refused the credentials.
            redis.exceptions.ConnectionError: the connection failed.
        """
        return DedicatedConnection(await self._open(reply_timeout, raw=raw))

    async def execute(self, *args: Arg) -> Any:
        """Send one command (batched with the others of this loop turn) and await its reply.

        Raises:
            redis.exceptions.ResponseError: Redis answered an error (NoScriptError for NOSCRIPT).
            redis.exceptions.ConnectionError: the connection failed or was closed.
            redis.exceptions.TimeoutError: no reply within the timeout.
        """
        conn = await self._connection()
        return await conn.send(args)

    async def execute_asking(self, *args: Arg) -> Any:
        """Send ASKING and then one command, adjacent on one connection (a Redis Cluster's ASK
        redirection: the target serves a slot it is importing only to a client that asked).

        Raises:
            As `execute`; an error of ASKING itself shows as the command's own error reply.
        """
        conn = await self._connection()
        # No await between the two sends: nothing of another caller can get between them.
        asking, reply = conn.send(("ASKING",)), conn.send(args)
        replies: tuple[Any, Any] = await asyncio.gather(asking, reply, return_exceptions=True)
        if isinstance(replies[1], BaseException):
            raise replies[1]
        return replies[1]

    async def subscribe(self, channel: str) -> AsyncGenerator[str, None]:
        """Subscribe to `channel` on a connection of its own; yields each message's payload.

        The connection is not shared and closes when the iteration ends (cancelling the task that
        iterates is safe: it only ever waits in a plain socket read).

        Raises:
            redis.exceptions.AuthenticationError: the server refused the credentials.
            redis.exceptions.ConnectionError: the connection failed or closed.
            redis.exceptions.ResponseError: Redis refused the SUBSCRIBE.
        """
        reader, writer = await self._open_stream()
        parser = hiredis.Reader(encoding="utf-8", errors="replace")
        self._subscriptions.add(writer)
        try:
            auth = self._auth_command()
            if auth is not None:
                writer.write(hiredis.pack_command(auth))  # type: ignore[arg-type]  # the stub types a 1-tuple; any length works
            writer.write(hiredis.pack_command(("SUBSCRIBE", channel)))  # type: ignore[arg-type]  # as above
            awaiting_auth = auth is not None
            while True:
                reply = parser.gets()
                while reply is False:
                    data = await reader.read(65536)
                    if not data:
                        raise redis_errors.ConnectionError(f"{self._where} closed the subscription")
                    parser.feed(data)
                    reply = parser.gets()
                if awaiting_auth:  # the first reply answers AUTH
                    awaiting_auth = False
                    if isinstance(reply, hiredis.ReplyError):
                        raise self._auth_error(_error_reply(str(reply)))
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    raise _error_reply(str(reply))
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == "message":
                    yield str(reply[2])
        except OSError as exc:
            raise redis_errors.ConnectionError(f"subscription to {self._where} failed: {exc}") from exc
        finally:
            self._subscriptions.discard(writer)
            writer.close()

    async def close(self) -> None:
        """Close every connection (and stop following the sentinels); waiting callers get ConnectionError."""
        for i, conn in enumerate(self._slots):
            if conn is not None:
                conn.close(redis_errors.ConnectionError("client closed"))
                self._slots[i] = None
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)
            self._following = None
        if self._sentinel is not None:
            await self._sentinel.aclose()
        await asyncio.sleep(0)


class DedicatedConnection:
    """A connection not shared with other callers (for blocking commands such as XREAD BLOCK)."""

    def __init__(self, conn: _Connection) -> None:
        """Wrap an opened, authenticated connection."""
        self._conn = conn

    @property
    def closed(self) -> bool:
        """Whether the connection was closed (by `close`, the server or a late reply)."""
        return self._conn.closed

    async def execute(self, *args: Arg) -> Any:
        """Send one command and await its reply.

        Raises:
            redis.exceptions.ResponseError: Redis answered an error.
            redis.exceptions.ConnectionError: the connection failed or was closed.
            redis.exceptions.TimeoutError: no reply within the connection's timeout.
        """
        return await self._conn.send(args)

    def close(self) -> None:
        """Close the connection; a waiting call fails with ConnectionError."""
        self._conn.close(redis_errors.ConnectionError("connection closed"))
