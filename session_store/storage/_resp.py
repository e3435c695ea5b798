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
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis import exceptions as redis_errors

Arg = str | int | float | bytes

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
        """Parse `url` (redis://, rediss:// or unix://, with optional user:password@); nothing connects yet.

        Args:
            access: TLS context (used for rediss:// only) and credentials for URLs that carry none.

        Raises:
            ValueError: not a redis:// URL.
        """
        access = access or RedisAccess()
        parts = urlsplit(url)
        query = dict(item.partition("=")[::2] for item in parts.query.split("&") if item)
        if parts.scheme in ("redis", "rediss") and parts.hostname:
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
        self._ssl = (access.tls or ssl.create_default_context()) if parts.scheme == "rediss" else None
        # The URL's credentials are the more specific: they win over the configured ones.
        self._username = unquote(parts.username) if parts.username else (access.username or None)
        self._password = unquote(parts.password) if parts.password else (access.password or None)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._slots: list[_Connection | None] = [None] * max(1, connections)
        self._locks = [asyncio.Lock() for _ in self._slots]
        self._next = 0

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

    async def _open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        opening = (
            asyncio.open_unix_connection(self._path)
            if self._path
            else asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        )
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
        except BaseException:
            conn.close(redis_errors.ConnectionError("connection setup failed"))
            raise
        return conn

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
            writer.close()

    async def close(self) -> None:
        """Close every connection; waiting callers get ConnectionError."""
        for i, conn in enumerate(self._slots):
            if conn is not None:
                conn.close(redis_errors.ConnectionError("client closed"))
                self._slots[i] = None
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
