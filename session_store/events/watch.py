"""The fan-out of the shards' event streams to watchers: one `StreamHub` per service node.

The hub follows every shard with one blocking reader (``XREAD BLOCK`` on a dedicated connection,
never through the shard's shared auto-pipelined connections) and keeps the most recent entries of
each shard in a small bounded buffer, decoded once. Watchers pull at their own pace: from that
buffer while their position is inside it, else from the shard's history with bounded ``XRANGE``
calls through the shared connections. A slow watcher therefore holds no more than one batch, and
never slows the writers or the other watchers; if the shard trimmed entries it had not read yet, it
is told so (`EventsTrimmedError`) instead of silently skipping them.

Trimming is detected by counting, not by ids: a `Position` carries how many entries the stream had
ever received up to it, and XINFO STREAM tells how many were removed (``entries-added - length``;
Redis 7.0 does not move ``max-deleted-entry-id`` on XTRIM, only on XDEL). Trimming removes the oldest
entries first, so an entry after the position is gone exactly when more were removed than the
position counts. Requires Redis >= 7.0 (``entries-added``) and no XDEL on the stream.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import structlog
from redis import exceptions as redis_errors

from session_store.errors import EventsTrimmedError, SessionStoreError, UnavailableError
from session_store.events.stream import (
    ZERO_ID,
    EventFilter,
    Position,
    SessionEvent,
    StreamId,
    decode_cursor,
    decode_entry,
    encode_cursor,
    new_shard_identity,
    validate_shard_identity,
)
from session_store.storage import keys
from session_store.storage.router import Router
from session_store.storage.shard import DedicatedLink, Shard

log = structlog.get_logger(__name__)

DEFAULT_BUFFER_SIZE = 4096
"""Recent entries the hub keeps per shard (up to twice this between two cuts)."""
DEFAULT_BATCH = 512
"""Entries per XREAD, per XRANGE of history, per slice of the buffer."""
DEFAULT_BLOCK_MS = 1000
"""How long one XREAD of a reader blocks."""
DEFAULT_CHECKPOINT_SECONDS = 5.0
"""A watcher whose filter skipped entries sends a checkpoint (its cursor) at most this long after."""
DEFAULT_SOCKET_TIMEOUT_SECONDS = 2.0
"""Reader connections: connect timeout, and the slack over the block time for a reply."""
DEFAULT_STOP_WAIT_SECONDS = 1.0
"""How long `stop` waits for watchers to end their streams before it stops the readers anyway."""
SHARD_RETRY_SECONDS = 1.0
"""A watcher that could not read a shard's history tries that shard again after this."""
READER_MAX_BACKOFF_SECONDS = 2.0
"""Longest pause of a reader between reconnect attempts."""
SHUTDOWN_MESSAGE = "the server is shutting down: resume with the last cursor"
TRIMMED_MESSAGE = (
    "events of shard {shard} after this watch's position were trimmed before it read them:"
    " watch again from_now or from_oldest (and re-read the state you keep)"
)


class WatchItem(NamedTuple):
    """One message of a watch: an event, or (event None) a checkpoint; cursor = position after it."""

    event: SessionEvent | None
    cursor: str


class _StreamInfo(NamedTuple):
    """What XINFO STREAM says, in one atomic reply."""

    last_generated: StreamId
    entries_added: int
    length: int
    first: StreamId | None
    max_deleted: StreamId

    @property
    def removed(self) -> int:
        """Entries trimmed (or deleted) so far: always the oldest ones."""
        return self.entries_added - self.length

    def end(self) -> Position:
        """The position after every entry so far (where "now" is)."""
        return Position(self.last_generated, self.entries_added)

    def before_oldest(self) -> Position:
        """The position right before the oldest retained entry."""
        if self.first is None:
            return self.end()
        return Position(self.first.previous(), self.removed)


Entry = tuple[Position, SessionEvent | None]
"""A stream entry as a watcher passes it: the position after it, and its event (None: skipped)."""


@dataclass(eq=False)
class _Feed:
    """One shard as the hub follows it. The buffer holds every entry after `start` up to `head`,
    contiguous, so the i-th has position (ids[i], start.added + i + 1)."""

    shard: Shard
    identity: str
    head: Position
    start: Position
    ids: list[StreamId] = field(default_factory=list)
    events: list[SessionEvent | None] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def reset(self, end: Position) -> None:
        """Empty the buffer; it starts again at `end`."""
        self.ids.clear()
        self.events.clear()
        self.start = self.head = end


@dataclass(eq=False)
class _Watcher:
    """One Watch call: its position per shard, and what the hub needs to end it."""

    positions: dict[str, Position]
    foreign: dict[str, Position]
    """Positions in shards this node does not know (removed ones): carried unchanged in cursors."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    retry_at: dict[str, float] = field(default_factory=dict)

    def cursor(self) -> str:
        return encode_cursor({**self.foreign, **self.positions})


class StreamHub:
    """This node's readers of every shard's event stream, and the watchers pulling from them."""

    def __init__(
        self,
        router: Router,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        batch: int = DEFAULT_BATCH,
        block_ms: int = DEFAULT_BLOCK_MS,
        checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_SECONDS,
    ) -> None:
        """Follow the shards of `router`; nothing is read until `start`.

        Args:
            router: the shards.
            buffer_size: recent entries kept per shard.
            batch: entries per read (XREAD, XRANGE, buffer slice).
            block_ms: how long one blocking read waits.
            checkpoint_seconds: how soon a checkpoint follows entries a watcher's filter skipped.
            socket_timeout: the readers' connect timeout and reply slack, seconds.

        Raises:
            ValueError: a size or time out of range.
        """
        if min(buffer_size, batch, block_ms) < 1 or min(checkpoint_seconds, socket_timeout) <= 0:
            raise ValueError("sizes and times must be > 0")
        self._router = router
        self._buffer_size = buffer_size
        self._batch = batch
        self._block_ms = block_ms
        self._checkpoint_seconds = checkpoint_seconds
        self._socket_timeout = socket_timeout
        self._feeds: dict[str, _Feed] = {}
        self._watchers: set[_Watcher] = set()
        # Readers only read while someone watches: decoding every event of every shard costs the
        # node ~100-200 µs of CPU per event (measured on creates), for nobody when no watch is open.
        self._watched = asyncio.Event()
        self._changed = asyncio.Event()
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Name every shard (its identity, created once with SET NX), note where each stream ends, and
        start one reader per shard.

        Raises:
            SessionStoreError: a shard failed (ShardUnavailableError when it cannot be reached).
            RuntimeError: a shard holds an identity that is not one, or two shards hold the same one
                (one was copied from the other: cursors could not tell them apart).
        """
        if self._started:
            return
        feeds = await asyncio.gather(*(self._open_feed(s) for s in self._router.shards.values()))
        by_identity: dict[str, _Feed] = {}
        for feed in feeds:
            other = by_identity.setdefault(feed.identity, feed)
            if other is not feed:
                raise RuntimeError(
                    f"shards {other.shard.name} and {feed.shard.name} hold the same identity"
                    f" ({keys.SHARD_IDENTITY} = {feed.identity}): delete it on one of them and restart"
                )
        self._feeds = by_identity
        self._started = True
        for feed in feeds:
            feed.task = asyncio.create_task(self._follow(feed), name=f"events-{feed.shard.name}")
        self._router.shard_listeners.append(self.add_shard)
        log.info("event_hub_started", shards={f.shard.name: f.identity for f in feeds})

    async def add_shard(self, shard: Shard) -> None:
        """Follow a shard the router connected while serving (a move's target): open watches read
        its stream from its oldest entry, so they miss none of the events of partitions moved to it.

        Raises:
            SessionStoreError: the shard failed.
        """
        if not self._started or self._closed:
            return
        feed = await self._open_feed(shard)
        if feed.identity in self._feeds:
            return
        oldest = (await _stream_info(shard)).before_oldest()
        self._feeds[feed.identity] = feed
        for watcher in self._watchers:
            watcher.positions[feed.identity] = watcher.foreign.pop(feed.identity, oldest)
        feed.task = asyncio.create_task(self._follow(feed), name=f"events-{feed.shard.name}")
        self._notify()
        log.info("event_hub_shard_added", shard=shard.name, identity=feed.identity)

    async def stop(self, wait: float = DEFAULT_STOP_WAIT_SECONDS) -> None:
        """End every watch (each stream ends UNAVAILABLE so clients resume elsewhere), then the readers.

        Watchers waiting for events end at once. One whose client is not reading is blocked in a
        write (gRPC flow control) and ends as soon as that write completes; gRPC cannot send its status
        before the data ahead of it, and cancelling its task would only leave the call open with no
        status, so it is left to the server's grace. `stop` waits up to `wait` seconds for the
        watchers; idempotent; new watches are refused from the start.
        """
        if self._closed:
            return
        self._closed = True
        self._notify()
        watchers = list(self._watchers)
        draining = 0
        if watchers:
            waits = [asyncio.create_task(w.done.wait()) for w in watchers]
            _, pending = await asyncio.wait(waits, timeout=wait)
            for waiting in pending:
                waiting.cancel()
            draining = len(pending)
        readers = [feed.task for feed in self._feeds.values() if feed.task is not None]
        for task in readers:
            task.cancel()
        if readers:
            # Bounded: a reader whose cancel was swallowed still ends after its current blocking read.
            _, stuck = await asyncio.wait(readers, timeout=self._block_ms / 1000 + self._socket_timeout)
            for task in stuck:
                log.warning("event_reader_not_stopped", task=task.get_name())
        log.info("event_hub_stopped", watchers_ended=len(watchers) - draining, watchers_draining=draining)

    @property
    def watcher_count(self) -> int:
        """How many Watch calls this node is serving."""
        return len(self._watchers)

    def newest_ids(self) -> dict[str, StreamId]:
        """Shard name -> id of the newest entry this hub has read there (where "now" is for it)."""
        return {feed.shard.name: feed.head.id for feed in self._feeds.values()}

    def watcher_lags_ms(self) -> list[int]:
        """Each watcher's lag: the most, over shards, of the time between the newest entry this hub has
        read and the watcher's position (0 when caught up)."""
        lags = []
        for watcher in self._watchers:
            lag = 0
            for identity, feed in self._feeds.items():
                position = watcher.positions.get(identity)
                if position is not None and position.id < feed.head.id:
                    lag = max(lag, feed.head.id.ms - position.id.ms)
            lags.append(lag)
        return lags

    async def watch(
        self, event_filter: EventFilter, *, after_cursor: str | None = None, from_oldest: bool = False
    ) -> AsyncGenerator[WatchItem, None]:
        """Stream a watcher's messages, first a checkpoint with its start position, until cancelled.

        Args:
            event_filter: which events to deliver (the others only move the position).
            after_cursor: start right after this cursor's position; shards it does not name start
                before their oldest retained entry.
            from_oldest: start before each shard's oldest retained entry (ignored with a cursor).
                Neither: from now, after each shard's last entry at the call.

        Yields:
            Events that pass the filter, each with the cursor right after it, and checkpoints (event
            None) when skipped entries moved the position and nothing was sent for a while.

        Raises:
            InvalidArgumentError: a malformed cursor.
            EventsTrimmedError: entries after the position were trimmed before this watcher read them.
            UnavailableError: the hub is not running or is stopping, or a shard to start in is down.
        """
        if self._closed or not self._started:
            raise UnavailableError(SHUTDOWN_MESSAGE if self._closed else "the event feed is not running")
        watcher = _Watcher(*await self._start_positions(after_cursor, from_oldest))
        self._watchers.add(watcher)
        self._watched.set()
        try:
            yield WatchItem(None, watcher.cursor())
            async with contextlib.aclosing(self._follow_watcher(watcher, event_filter)) as items:
                async for item in items:
                    yield item
        finally:
            self._watchers.discard(watcher)
            if not self._watchers:
                self._watched.clear()
            watcher.done.set()

    async def _follow_watcher(
        self, watcher: _Watcher, event_filter: EventFilter
    ) -> AsyncGenerator[WatchItem, None]:
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        skipped = False  # the position moved past entries nothing was sent for
        while True:
            if self._closed:
                raise UnavailableError(SHUTDOWN_MESSAGE)
            changed = self._changed  # taken before reading, so no wake-up falls between
            moved = False
            for identity, feed in list(self._feeds.items()):  # a shard may be added meanwhile
                for position, event in await self._read_or_defer(watcher, identity, feed):
                    moved = True
                    watcher.positions[identity] = position
                    if event is None or not event_filter.matches(event):
                        skipped = True
                        continue
                    yield WatchItem(event, watcher.cursor())
                    last_sent, skipped = loop.time(), False
                    if self._closed:
                        raise UnavailableError(SHUTDOWN_MESSAGE)
            if skipped and loop.time() - last_sent >= self._checkpoint_seconds:
                yield WatchItem(None, watcher.cursor())
                last_sent, skipped = loop.time(), False
            if moved:
                continue
            timeout = self._checkpoint_seconds
            if skipped:
                timeout = max(0.0, last_sent + self._checkpoint_seconds - loop.time())
            watcher.retry_at = {i: t for i, t in watcher.retry_at.items() if t > loop.time()}
            if watcher.retry_at:
                timeout = min(timeout, max(0.0, min(watcher.retry_at.values()) - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await changed.wait()

    async def _read_or_defer(self, watcher: _Watcher, identity: str, feed: _Feed) -> Sequence[Entry]:
        """A watcher's next entries of one shard; none while the shard is unreadable (retried later, so
        one shard down does not stop the others' events)."""
        loop = asyncio.get_running_loop()
        if watcher.retry_at.get(identity, 0.0) > loop.time():
            return ()
        try:
            return await self._read(feed, watcher.positions[identity])
        except UnavailableError as exc:
            watcher.retry_at[identity] = loop.time() + SHARD_RETRY_SECONDS
            log.warning("watch_shard_unreadable", shard=feed.shard.name, error=exc.message)
            return ()

    async def _start_positions(
        self, after_cursor: str | None, from_oldest: bool
    ) -> tuple[dict[str, Position], dict[str, Position]]:
        """Known shards' positions, and the foreign ones a cursor carries.

        Raises:
            InvalidArgumentError: a malformed cursor.
            UnavailableError: a shard to start before the oldest entry of cannot be asked.
        """
        decoded = decode_cursor(after_cursor) if after_cursor is not None else {}
        foreign = {i: p for i, p in decoded.items() if i not in self._feeds}

        async def start_in(feed: _Feed) -> Position:
            if feed.identity in decoded:
                return decoded[feed.identity]
            if after_cursor is not None or from_oldest:
                return (await _stream_info(feed.shard)).before_oldest()
            try:
                return (await _stream_info(feed.shard)).end()
            except UnavailableError:
                return feed.head  # now, as far as this node knows; the shard is read when it is back

        starts = await asyncio.gather(*(start_in(f) for f in self._feeds.values()))
        return dict(zip(self._feeds, starts, strict=True)), foreign

    async def _read(self, feed: _Feed, position: Position) -> Sequence[Entry]:
        """The next entries of a shard after `position`: from the buffer when it covers them.

        Raises:
            EventsTrimmedError: entries after `position` are gone.
            UnavailableError: the shard cannot be read.
            SessionStoreError: the shard failed otherwise.
        """
        if position.id >= feed.head.id:
            return ()
        if position.id >= feed.start.id:
            first = bisect.bisect_right(feed.ids, position.id)
            ids = feed.ids[first : first + self._batch]
            events = feed.events[first : first + self._batch]
            added = feed.start.added + first
            return [
                (Position(sid, added + k + 1), ev)
                for k, (sid, ev) in enumerate(zip(ids, events, strict=True))
            ]
        return await self._read_history(feed, position)

    async def _read_history(self, feed: _Feed, position: Position) -> list[Entry]:
        """Entries after `position` from the shard itself, checking that none after it was trimmed."""
        shard = feed.shard
        # Inclusive start: finding the position's own entry proves nothing after it was trimmed
        # (trimming removes the oldest entries first), which spares the XINFO in the common case.
        reply = await shard.command("XRANGE", keys.EVENTS, str(position.id), "+", "COUNT", self._batch + 1)
        raw = list(reply or ())
        if raw and StreamId.parse(raw[0][0]) == position.id:
            raw = raw[1:]
        else:
            # Asked after the XRANGE, so a trim in between is reported rather than missed.
            info = await _stream_info(shard)
            if info.removed > position.added or info.max_deleted > position.id:
                raise EventsTrimmedError(TRIMMED_MESSAGE.format(shard=shard.name))
            raw = raw[: self._batch]
        entries: list[Entry] = []
        for k, (entry_id, flat) in enumerate(raw):
            fields = dict(zip(flat[::2], flat[1::2], strict=False))
            entries.append(
                (Position(StreamId.parse(entry_id), position.added + k + 1), _event(feed, entry_id, fields))
            )
        return entries

    async def _open_feed(self, shard: Shard) -> _Feed:
        await shard.command("SET", keys.SHARD_IDENTITY, new_shard_identity(), "NX")
        value = await shard.command("GET", keys.SHARD_IDENTITY)
        try:
            identity = validate_shard_identity(value if isinstance(value, str) else "")
        except ValueError:
            raise RuntimeError(
                f"shard {shard.name} holds {keys.SHARD_IDENTITY} = {value!r}, not an identity"
            ) from None
        end = (await _stream_info(shard)).end()
        return _Feed(shard=shard, identity=identity, head=end, start=end)

    async def _follow(self, feed: _Feed) -> None:
        """The reader of one shard: XREAD BLOCK from the head, into the buffer, until the hub stops.

        Its connection is the shard's own kind (same TLS and credentials), opened for it alone.
        """
        conn: DedicatedLink | None = None
        verify = True  # after (re)connecting: check that nothing after the head was trimmed unread
        backoff = 0.1
        failing = False
        try:
            # The flag ends the loop as well as cancellation: `stop` sets it before cancelling.
            while not self._closed:
                try:
                    if not self._watched.is_set():
                        await self._idle(feed)
                        verify = True  # what the reader missed may have been trimmed meanwhile
                        continue
                    if conn is None or conn.closed:
                        conn = await feed.shard.client.dedicated(
                            reply_timeout=self._block_ms / 1000 + self._socket_timeout
                        )
                    before = feed.head
                    reply = await conn.execute(
                        "XREAD",
                        "COUNT",
                        self._batch,
                        "BLOCK",
                        self._block_ms,
                        "STREAMS",
                        keys.EVENTS,
                        str(before.id),
                    )
                    entries = [
                        (entry_id, dict(zip(flat[::2], flat[1::2], strict=False)))
                        for entry_id, flat in (reply[0][1] if reply else [])
                    ]
                    # A full batch means the reader is behind the writers: trimming may overtake it.
                    if verify or len(entries) >= self._batch:
                        info = await _stream_info(feed.shard)
                        verify = False
                        if info.removed > before.added:
                            # Entries after the head may be gone unread: restart the buffer at the end;
                            # watchers behind it read the shard, which tells them they fell behind.
                            log.warning("event_reader_fell_behind", shard=feed.shard.name, at=str(before.id))
                            feed.reset(info.end())
                            self._notify()
                            continue
                    self._append(feed, entries)
                    if failing:
                        log.info("event_reader_recovered", shard=feed.shard.name)
                    failing, backoff = False, 0.1
                except (redis_errors.RedisError, OSError, SessionStoreError) as exc:
                    if not failing:
                        log.warning("event_reader_failed", shard=feed.shard.name, error=str(exc))
                    failing, verify = True, True
                    if conn is not None:
                        conn.close()
                        conn = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, READER_MAX_BACKOFF_SECONDS)
        finally:
            if conn is not None:
                conn.close()

    async def _idle(self, feed: _Feed) -> None:
        """Wait until someone watches. A backlog longer than the buffer is then skipped: the buffer
        restarts at the stream's end, and a watcher behind it reads the shard's history (XRANGE)."""
        await self._watched.wait()
        info = await _stream_info(feed.shard)
        if info.end().added - feed.head.added > self._buffer_size:
            feed.reset(info.end())
            self._notify()

    def _append(self, feed: _Feed, entries: list[Any]) -> None:
        """Add the entries a reader read (the successors of the head, in order) to the buffer."""
        if not entries:
            return
        for entry_id, fields in entries:
            feed.ids.append(StreamId.parse(entry_id))
            feed.events.append(_event(feed, entry_id, fields))
        feed.head = Position(feed.ids[-1], feed.head.added + len(entries))
        if len(feed.ids) > 2 * self._buffer_size:
            cut = len(feed.ids) - self._buffer_size
            feed.start = Position(feed.ids[cut - 1], feed.start.added + cut)
            del feed.ids[:cut]
            del feed.events[:cut]
        self._notify()

    def _notify(self) -> None:
        """Wake every waiting watcher (a fresh Event per change: waiters hold the previous one)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def _event(feed: _Feed, entry_id: str, fields: dict[str, str]) -> SessionEvent | None:
    try:
        return decode_entry(feed.identity, entry_id, fields)
    except ValueError as exc:
        log.warning("event_entry_skipped", shard=feed.shard.name, id=entry_id, error=str(exc))
        return None


async def _stream_info(shard: Shard) -> _StreamInfo:
    """XINFO STREAM of the shard's event stream (all zero when there is no stream).

    Raises:
        SessionStoreError: the shard failed (UnavailableError when it cannot be reached).
    """
    # XINFO answers an error for a missing key, which the shard's observer would count as a failure.
    if not await shard.command("EXISTS", keys.EVENTS):
        return _StreamInfo(ZERO_ID, 0, 0, None, ZERO_ID)
    reply = await shard.command("XINFO", "STREAM", keys.EVENTS)
    info = dict(zip(reply[::2], reply[1::2], strict=False))
    first = info.get("first-entry")
    return _StreamInfo(
        last_generated=StreamId.parse(info["last-generated-id"]),
        entries_added=int(info["entries-added"]),
        length=int(info["length"]),
        first=StreamId.parse(first[0]) if first else None,
        max_deleted=StreamId.parse(info.get("max-deleted-entry-id", "0-0")),
    )
