"""Delay from a session's deadline to its `expired` event, with the sweeper alone, measured.

The job: start local redis-server shards (AOF off: persistence is not what is measured), set a realm
policy with a short SSO idle timeout, and start `--nodes` sweeper processes, each a service node's
`Sweeper` (events.sweeper) over every shard with keyspace notifications off (EventSettings); then
create `--sessions` user sessions through `SessionRepository.create_user_session` (SystemClock: the
shards' own TIME), paced over `--create-seconds` so that their deadlines fall over a window of about
that length, all of them live at once when the first deadline passes. Then wait until the shards
have counted an `expired` event per session (or `--timeout`), read every shard's event stream, and
report:

- delay = ``at - dl`` of each `expired` event (the script's decision time minus the session's
  deadline, both from the shard's clock) as percentiles, and per deadline second; with
  `--live-read` the streams are followed during the expiry (costing CPU the shards and sweepers
  would otherwise have) and the delay until this process read each event is shown too;
- exactly-once: every created session has exactly one `expired` event, no other session has one,
  the shards' event counters agree, and no session is left counted as live;
- the rate of events, the CPU of each sweeper process, of the shards and of this process over the
  expiry window (first deadline to last event, from /proc), the sweepers' script calls (counted by
  the Shard observer, over each node's whole life);
- Redis memory per session before the expiry (INFO used_memory growth; MEMORY USAGE of the expiry
  index, its meta hash, the due index and the stream), and with `--census` every key by kind after
  the creation and after the expiry.

Deadlines are whole seconds (a session's start is kept in seconds), so each second's creations come
due together: the sweeper sees one burst per second of N / `--create-seconds` sessions.
`--same-deadline` is the worst case: every create decides at one frozen second (a TestClock in this
process only; the sweepers keep the shards' TIME), so all N sessions come due at the same instant.

`--notifications` runs the keyspace-notification listener in every node as well and makes the
sweeper's interval long (`--interval`, default 30 s there), to compare the two paths; this process
then also subscribes to the notifications, to show when Redis's own expiry got to each session hash.
`--claim-batch` is an experiment: it sets `events.sweeper.CLAIM_BATCH` in the sweeper processes.

Usage:
    .venv/bin/python scripts/bench_expiry.py [--sessions 100000] [--nodes 1] [--create-seconds 20]
        [--idle 35] [--concurrency 64] [--interval 0.25] [--notifications] [--same-deadline]
        [--claim-batch N] [--live-read] [--census] [--timeout 240] [--json out.json]
        [--events-csv events.csv]

Everything binds 127.0.0.1; every process started (shards, sweeper nodes) is stopped by PID, also
on Ctrl-C and on the time bound. The `_node` sub-command is the sweeper process this script starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from session_store.config import DEFAULT_EVENTS_SWEEP_INTERVAL_SECONDS, EventSettings
from session_store.embedded import EmbeddedShards
from session_store.errors import SessionStoreError
from session_store.events import sweeper as sweeper_module
from session_store.events.stream import EventType, decode_entry
from session_store.events.sweeper import Sweeper
from session_store.logging import configure_logging
from session_store.model.clock import Clock, SystemClock, TestClock
from session_store.model.policy import RealmPolicy
from session_store.model.session import NewUserSession
from session_store.storage import keys
from session_store.storage.policies import PolicyStore
from session_store.storage.router import Router
from session_store.storage.sessions import SessionRepository
from session_store.storage.shard import Shard

REALM = "bench-expiry"
NOTES = {"AUTH_TIME": "1700000000", "auth_type": "code", "level_of_authentication": "1"}
DEFAULT_SESSIONS = 100_000
DEFAULT_SHARDS = 3
DEFAULT_NODES = 1
DEFAULT_CREATE_SECONDS = 20.0
DEFAULT_IDLE_SECONDS = 35
"""SSO idle timeout of the realm: longer than the creation, so every session is live at once."""
DEFAULT_CONCURRENCY = 64
DEFAULT_TIMEOUT_SECONDS = 240.0
NOTIFICATIONS_INTERVAL_SECONDS = 30.0
"""The sweeper's interval in --notifications mode unless --interval says otherwise."""
TARGET_P99_MS = 2000.0
"""The issue's bound: p99 of deadline -> event delay, sweeper alone, 100 000 live sessions."""
READ_BATCH = 10_000
SCAN_COUNT = 2000
COUNTER_POLL_SECONDS = 0.05
READ_BLOCK_MS = 200
SETTLE_SECONDS = 1.0
"""After the last expected event: how long to keep reading for duplicates before the final checks."""
NODE_READY_SECONDS = 30.0
NODE_STOP_SECONDS = 10.0
DELAY_BUCKETS_MS = (250, 500, 1000, 2000, 5000)
_SESSION_KEY = re.compile(r"ss:\{[0-9a-f]{3}\}:s:(.+)")
"""An online session hash's key (storage/keys.py), its session id captured."""


# --------------------------------------------------------------------------------------------------
# The sweeper node process
# --------------------------------------------------------------------------------------------------


@dataclass
class CallStats:
    """Calls of one script (or command kind) a node made, as its shards' observer saw them."""

    count: int = 0
    seconds: float = 0.0
    errors: int = 0


async def _node_main(
    shard_urls: Mapping[str, str], *, notifications: bool, interval: float, claim_batch: int
) -> None:
    """Run one node's Sweeper until SIGTERM; print a ready line, then a stats line."""
    if claim_batch:  # an experiment: the module reads it on every claim
        sweeper_module.CLAIM_BATCH = claim_batch
    calls: dict[str, CallStats] = {}

    def observe(shard: str, operation: str, seconds: float, error: str | None) -> None:
        stats = calls.setdefault(operation, CallStats())
        stats.count += 1
        stats.seconds += seconds
        stats.errors += error is not None

    # Shards as a service node builds them (server.py), defaults of RedisSettings.
    router = Router({name: Shard(name, url, observer=observe) for name, url in shard_urls.items()})
    await router.connect(attempts=20)
    settings = EventSettings(notifications=notifications, sweep_interval_seconds=interval)
    sweeper = Sweeper(router, SystemClock(), settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sweeper.start()
    print(json.dumps({"ready": True}), flush=True)
    await stop.wait()
    await sweeper.stop()
    await router.close()
    stats = sweeper.stats
    print(
        json.dumps(
            {
                "expired": stats.expired,
                "sweeps": stats.sweeps,
                "notifications": stats.notifications,
                "errors": stats.errors,
                "cpu_seconds": time.process_time(),
                "calls": {name: asdict(c) for name, c in calls.items()},
            }
        ),
        flush=True,
    )


# --------------------------------------------------------------------------------------------------
# The coordinator
# --------------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and its threads, from /proc (0.0 where unreadable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    parts = stat.rsplit(")", 1)[1].split()  # utime and stime are fields 14 and 15 of stat(5)
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (user + nice + system, all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[:3]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Node:
    """A sweeper process this script started."""

    index: int
    process: subprocess.Popen[str]
    final: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    def wait_ready(self, seconds: float) -> None:
        """Wait for the ready line.

        Raises:
            RuntimeError: the node exited or said nothing within `seconds`.
        """
        assert self.process.stdout is not None  # noqa: S101 - started with a pipe
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        line = self.process.stdout.readline() if ready else ""
        if not line or not json.loads(line).get("ready"):
            raise RuntimeError(f"sweeper node {self.index} did not start (exit {self.process.poll()})")

    def stop(self) -> None:
        """SIGTERM, then read its stats line; SIGKILL if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=NODE_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        lines = [line for line in out.splitlines() if line.strip()]
        if lines:
            self.final = json.loads(lines[-1])

    def kill(self) -> None:
        """SIGKILL if still running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def start_node(index: int, shard_urls: Mapping[str, str], args: argparse.Namespace) -> Node:
    """Start one sweeper process and wait until it has connected and started sweeping.

    Raises:
        RuntimeError: it did not start.
    """
    argv = [sys.executable, str(Path(__file__).resolve()), "_node", "--shard-urls", json.dumps(shard_urls)]
    argv += ["--interval", str(args.interval), "--claim-batch", str(args.claim_batch)]
    if args.notifications:
        argv.append("--notifications")
    # A session of its own: Ctrl-C reaches only this script, which stops the node by PID.
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)  # noqa: S603 - our own argv
    node = Node(index, process)
    try:
        node.wait_ready(NODE_READY_SECONDS)
    except BaseException:
        node.kill()
        raise
    return node


@dataclass
class ExpiredEvent:
    """What the report needs of one `expired` event."""

    shard: str
    at_ms: int
    deadline_ms: int
    seen_ms: int
    reason: str


@dataclass
class CpuSnapshot:
    """CPU seconds of every process involved at one moment, and the wall clock."""

    wall: float
    nodes: list[float]
    shards: float
    coordinator: float
    machine: float


def _snapshot(node_pids: Sequence[int], shard_pids: Sequence[int]) -> CpuSnapshot:
    return CpuSnapshot(
        wall=time.monotonic(),
        nodes=[_cpu_seconds(p) for p in node_pids],
        shards=sum(_cpu_seconds(p) for p in shard_pids),
        coordinator=time.process_time(),
        machine=_machine_busy_seconds(),
    )


@dataclass
class Run:
    """Everything one run measured."""

    sessions: int
    created: int = 0
    create_errors: int = 0
    create_seconds: float = 0.0
    create_cpu_seconds: float = 0.0
    live_after_create: int = 0
    first_deadline_ms: int = 0
    last_deadline_ms: int = 0
    margin_seconds: float = 0.0
    """From the end of the creation to the first deadline (negative: deadlines passed during it)."""
    used_memory_before: int = 0
    used_memory_after_create: int = 0
    used_memory_after_expiry: int = 0
    memory_usage: dict[str, int] = field(default_factory=dict)
    census_after_create: dict[str, tuple[int, int]] = field(default_factory=dict)
    census_after_expiry: dict[str, tuple[int, int]] = field(default_factory=dict)
    events: dict[str, ExpiredEvent] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    """Session id -> epoch ms its `expired` event was read by the live reader (--live-read)."""
    notified: dict[str, int] = field(default_factory=dict)
    """Session id -> epoch ms its hash's keyspace `expired` notification reached this process."""
    duplicates: int = 0
    unknown: int = 0
    counted_expired: int = 0
    """Sum of the shards' `e:expired` counters (events the scripts appended)."""
    live_after_expiry: int = -1
    timed_out: bool = False
    window: tuple[CpuSnapshot, CpuSnapshot] | None = None


async def _used_memory(router: Router) -> int:
    total = 0
    for shard in router.shards.values():
        info = str(await shard.command("INFO", "memory"))
        for line in info.splitlines():
            if line.startswith("used_memory:"):
                total += int(line.split(":", 1)[1])
    return total


async def _counter_sum(router: Router, name: str) -> int:
    values = [await s.command("HGET", keys.COUNTS, name) for s in router.shards.values()]
    return sum(int(v or 0) for v in values)


async def _memory_usage(router: Router) -> dict[str, int]:
    """Bytes (MEMORY USAGE, every element counted) of the event keys, summed over all shards."""
    usage: Counter[str] = Counter()
    for name, partitions in router.partitions_by_shard().items():
        shard = router.shards[name]
        commands: list[tuple[str, ...]] = []
        for p in partitions:
            commands.append(("MEMORY", "USAGE", keys.expiry_index(p), "SAMPLES", "0"))
            commands.append(("MEMORY", "USAGE", keys.expiry_meta(p), "SAMPLES", "0"))
        replies = await shard.pipeline(commands)
        usage["expiry index (x)"] += sum(int(r or 0) for r in replies[0::2])
        usage["expiry meta (xm)"] += sum(int(r or 0) for r in replies[1::2])
        for label, key in (("due index", keys.DUE), ("event stream", keys.EVENTS)):
            usage[label] += int(await shard.command("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)
        usage["stream entries"] += int(await shard.command("XLEN", keys.EVENTS))
    return dict(usage)


def _key_kind(key: str) -> str:
    """`s`, `u`, `r`, `x`... for a partition's key (see storage/keys.py); the whole name otherwise."""
    try:
        partition = keys.partition_of(key)
    except ValueError:
        return key
    return key[len(keys.tag(partition)) :].split(":", 1)[0]


async def _key_census(router: Router) -> dict[str, tuple[int, int]]:
    """Kind of key -> (keys, bytes by MEMORY USAGE), over every shard (SCAN: what is left)."""
    census: dict[str, tuple[int, int]] = {}
    for shard in router.shards.values():
        cursor = "0"
        while True:
            cursor, found = await shard.command("SCAN", cursor, "COUNT", SCAN_COUNT)
            if found:
                sizes = await shard.pipeline([("MEMORY", "USAGE", k, "SAMPLES", "0") for k in found])
                for key, size in zip(found, sizes, strict=True):
                    count, total = census.get(_key_kind(key), (0, 0))
                    census[_key_kind(key)] = (count + 1, total + int(size or 0))
            if cursor == "0":
                break
    return census


async def create_sessions(
    repository: SessionRepository, run: Run, rate: float, concurrency: int, deadline: float
) -> set[str]:
    """Create `run.sessions` sessions, at most `rate` per second (0 = as fast as they go)."""
    ids: set[str] = set()
    rng = random.Random(7)
    users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(run.sessions)]
    next_index = 0
    first_dl, last_dl = math.inf, 0
    started = time.monotonic()
    cpu_before = time.process_time()

    async def worker() -> None:
        nonlocal next_index, first_dl, last_dl
        while next_index < run.sessions and time.monotonic() < deadline:
            i = next_index
            next_index += 1
            if rate > 0:
                wait = started + i / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            new = NewUserSession(
                realm=REALM,
                user_id=users[i],
                login_username=f"user-{i:06d}@example.com",
                ip_address=f"10.{i % 250}.{(i // 250) % 250}.{i % 200 + 1}",
                auth_method="openid-connect",
                notes=NOTES,
            )
            try:
                session = await repository.create_user_session(new)
            except SessionStoreError:
                run.create_errors += 1
                continue
            ids.add(session.id)
            first_dl = min(first_dl, session.expires_at_ms)
            last_dl = max(last_dl, session.expires_at_ms)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.create_seconds = time.monotonic() - started
    run.create_cpu_seconds = time.process_time() - cpu_before
    run.created = len(ids)
    run.first_deadline_ms = int(first_dl) if ids else 0
    run.last_deadline_ms = last_dl
    return ids


@dataclass
class StreamReader:
    """Collects every shard's `expired` events (and, optionally, live timings) for one run.

    Nothing is read while the nodes sweep unless asked (reading 5 000 events/s costs CPU that the
    shards and the sweepers would otherwise have): the shards' `e:expired` counters are polled until
    they add up to every session, and the streams are read from their start afterwards; `at` and
    `dl` are written by the script, so the delay does not depend on when they are read. `live`
    also follows the streams from their end as events arrive, to measure when a reader sees them;
    `notifications` records when each session hash's keyspace `expired` notification arrives.
    """

    ids: set[str]
    run: Run
    stop_at: float
    """Monotonic time at which the live readers and the counter polling stop."""
    on_complete: Callable[[], None]
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    async def read_all(self, shard: str, url: str) -> None:
        """Read a shard's whole stream; record each `expired` event (or duplicate, or stranger)."""
        conn: Any = aioredis.Redis.from_url(url, decode_responses=True, protocol=2)
        run = self.run
        last = "0-0"
        try:
            while True:
                reply = await conn.xread({keys.EVENTS: last}, count=READ_BATCH)
                entries = reply[0][1] if reply else []
                if not entries:
                    return
                last = entries[-1][0]
                for entry_id, fields in entries:
                    if fields.get("t") != EventType.EXPIRED.stream_name:
                        continue
                    event = decode_entry("bench", entry_id, fields)
                    if event.session_id in run.events:
                        run.duplicates += 1
                    elif event.session_id not in self.ids:
                        run.unknown += 1
                    else:
                        seen = run.seen.get(event.session_id, 0)
                        run.events[event.session_id] = ExpiredEvent(
                            shard, event.at_ms, event.deadline_ms, seen, event.reason
                        )
        finally:
            await conn.aclose()

    async def follow(self, url: str) -> None:
        """Follow a shard's stream from its end; record when each `expired` event was read."""
        conn: Any = aioredis.Redis.from_url(url, decode_responses=True, protocol=2)
        last = "$"
        try:
            while time.monotonic() < self.stop_at:
                reply = await conn.xread({keys.EVENTS: last}, count=READ_BATCH, block=READ_BLOCK_MS)
                seen_ms = time.time_ns() // 1_000_000
                entries = reply[0][1] if reply else []
                if entries:
                    last = entries[-1][0]
                for _, fields in entries:
                    if fields.get("t") == EventType.EXPIRED.stream_name:
                        self.run.seen.setdefault(fields.get("s", ""), seen_ms)
        finally:
            await conn.aclose()

    async def watch_counters(self, router: Router) -> None:
        """Until the shards have counted an `expired` event per session."""
        while time.monotonic() < self.stop_at:
            if await _counter_sum(router, "e:expired") >= len(self.ids):
                self.on_complete()
                self.complete.set()
                return
            await asyncio.sleep(COUNTER_POLL_SECONDS)

    async def listen(self, url: str) -> None:
        """Record when each session hash's keyspace `expired` notification arrived (Redis's own expiry)."""
        conn: Any = aioredis.Redis.from_url(url, decode_responses=True, protocol=2)
        pubsub = conn.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe("__keyevent@0__:expired")
            while time.monotonic() < self.stop_at:
                message = await pubsub.get_message(timeout=READ_BLOCK_MS / 1000)
                if message is None:
                    continue
                match = _SESSION_KEY.fullmatch(str(message.get("data", "")))
                if match and match.group(1) in self.ids:
                    self.run.notified.setdefault(match.group(1), time.time_ns() // 1_000_000)
        finally:
            await pubsub.aclose()
            await conn.aclose()


async def read_expired(
    router: Router,
    *,
    reader: StreamReader,
    deadline: float,
    on_first_deadline: Callable[[], None],
    live: bool,
    notifications: bool,
) -> None:
    """Wait until the shards counted an `expired` event per id or `deadline`, then SETTLE_SECONDS
    more (so that a duplicate appended after the last expected event is counted too); read them.

    `on_first_deadline` runs when the first deadline passes. `live` and `notifications`: see
    `StreamReader`.
    """

    async def window_start() -> None:
        await asyncio.sleep(max(0.0, reader.run.first_deadline_ms / 1000 - time.time()))
        on_first_deadline()

    marker = asyncio.create_task(window_start())
    urls = [shard.url for shard in router.shards.values()]
    tasks = [asyncio.create_task(reader.watch_counters(router))]
    if live:
        tasks += [asyncio.create_task(reader.follow(url)) for url in urls]
    if notifications:
        tasks += [asyncio.create_task(reader.listen(url)) for url in urls]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.complete.wait(), timeout=max(0.0, deadline - time.monotonic()))
    reader.run.timed_out = not reader.complete.is_set()
    reader.stop_at = min(reader.stop_at, time.monotonic() + SETTLE_SECONDS)
    await asyncio.gather(*tasks)
    await asyncio.gather(*(reader.read_all(s.name, s.url) for s in router.shards.values()))
    if not marker.done():
        marker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await marker


async def run_benchmark(
    args: argparse.Namespace, shard_urls: Mapping[str, str], nodes: Sequence[Node], shard_pids: Sequence[int]
) -> Run:
    """Create the sessions, wait for their events, measure; the nodes are already sweeping."""
    deadline = time.monotonic() + args.timeout
    run = Run(sessions=args.sessions)
    router = Router({name: Shard(name, url) for name, url in shard_urls.items()})
    await router.connect(attempts=20)
    try:
        policies = PolicyStore(router)
        await policies.set(RealmPolicy(realm=REALM, sso_session_idle_timeout=args.idle))
        # --same-deadline: every create decides at one frozen second, so every deadline is the same.
        clock: Clock = TestClock() if args.same_deadline else SystemClock()
        repository = SessionRepository(router, policies, clock)
        run.used_memory_before = await _used_memory(router)
        rate = args.sessions / args.create_seconds if args.create_seconds > 0 else 0.0
        ids = await create_sessions(repository, run, rate, args.concurrency, deadline)
        run.margin_seconds = run.first_deadline_ms / 1000 - time.time()
        run.live_after_create = await _counter_sum(router, f"s:{REALM}")
        run.used_memory_after_create = await _used_memory(router)
        run.memory_usage = await _memory_usage(router)
        if args.census:
            run.census_after_create = await _key_census(router)
            if time.time() * 1000 > run.first_deadline_ms:
                print("warning: the census ran into the expiry window (raise --idle)", file=sys.stderr)
        print(
            f"created {run.created} sessions in {run.create_seconds:.1f} s "
            f"({run.created / max(run.create_seconds, 1e-9):.0f}/s, {run.create_errors} errors); "
            f"{run.live_after_create} live; first deadline in {run.margin_seconds:.1f} s, "
            f"last in {run.last_deadline_ms / 1000 - time.time():.1f} s",
            flush=True,
        )
        node_pids = [n.pid for n in nodes]
        marks: dict[str, CpuSnapshot] = {}

        def mark(name: str) -> Callable[[], None]:
            def take() -> None:
                marks.setdefault(name, _snapshot(node_pids, shard_pids))

            return take

        reader = StreamReader(ids, run, deadline + SETTLE_SECONDS, mark("end"))
        await read_expired(
            router,
            reader=reader,
            deadline=deadline,
            on_first_deadline=mark("start"),
            live=args.live_read,
            notifications=args.notifications,
        )
        now = _snapshot(node_pids, shard_pids)
        # Timed out: the window ends now; the first deadline never came: it is empty.
        run.window = (marks.get("start", now), marks.get("end", now))
        run.counted_expired = await _counter_sum(router, "e:expired")
        run.live_after_expiry = await _counter_sum(router, f"s:{REALM}")
        run.used_memory_after_expiry = await _used_memory(router)
        if args.census:
            run.census_after_expiry = await _key_census(router)
    finally:
        await router.close()
    return run


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """The nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def _report_memory(run: Run) -> dict[str, Any]:
    n = max(run.created, 1)
    grown = run.used_memory_after_create - run.used_memory_before
    usage = run.memory_usage
    stream, entries = usage.get("event stream", 0), usage.get("stream entries", 0)
    left = run.used_memory_after_expiry - run.used_memory_before
    print(
        f"memory: used_memory +{grown / 2**20:.1f} MiB for {run.created} sessions = "
        f"{grown / n:.0f} B/session; of it expiry index {usage.get('expiry index (x)', 0) / n:.0f} B "
        f"+ meta {usage.get('expiry meta (xm)', 0) / n:.0f} B per session, due index "
        f"{usage.get('due index', 0) / 1024:.0f} KiB, stream {stream / 2**20:.1f} MiB for {entries} "
        f"`created` entries ({stream / max(entries, 1):.0f} B/entry); after the expiry: "
        f"+{left / 2**20:.1f} MiB over the start"
    )
    for label, census in (
        ("after create", run.census_after_create),
        ("after expiry", run.census_after_expiry),
    ):
        if census:
            parts = sorted(census.items(), key=lambda kv: -kv[1][1])
            text = ", ".join(f"{kind} {count} keys {size / 2**20:.1f} MiB" for kind, (count, size) in parts)
            print(f"  keys {label} (kind: count, MEMORY USAGE): {text}")
    return {
        "census_after_create": run.census_after_create,
        "census_after_expiry": run.census_after_expiry,
        "used_memory_before": run.used_memory_before,
        "used_memory_after_create": run.used_memory_after_create,
        "used_memory_after_expiry": run.used_memory_after_expiry,
        "bytes_per_session": grown / n,
        "memory_usage": usage,
    }


def _report_events(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    events = sorted(run.events.values(), key=lambda e: e.at_ms)
    delays = sorted(e.at_ms - e.deadline_ms for e in events)
    seen = sorted(e.seen_ms - e.deadline_ms for e in events if e.seen_ms)
    span = (events[-1].at_ms - events[0].at_ms) / 1000 if len(events) > 1 else 0.0
    dl_span = (run.last_deadline_ms - run.first_deadline_ms) / 1000
    reasons = Counter(e.reason for e in events)
    rate = len(events) / max(span, 1e-9)
    print(
        f"events: {len(events)} expired of {run.created} in {span:.1f} s ({rate:.0f}/s; deadlines "
        f"spread over {dl_span:.0f} s); reasons {dict(reasons)}" + ("; TIMED OUT" if run.timed_out else "")
    )
    quantiles = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))
    header = f"{'delay ms':<28}" + "".join(f"{name:>8}" for name, _ in quantiles)
    print(header)
    print("-" * len(header))
    table: dict[str, dict[str, int]] = {}
    rows = [("at - dl (event appended)", delays)]
    if args.live_read:
        rows.append((f"read - dl ({len(seen)} read live)", seen))
    if run.notified:
        notified = sorted(
            ms - run.events[sid].deadline_ms for sid, ms in run.notified.items() if sid in run.events
        )
        rows.append((f"notified - dl ({len(notified)})", notified))
    for label, values in rows:
        table[label] = {name: percentile(values, q) for name, q in quantiles}
        print(f"{label:<28}" + "".join(f"{v:8d}" for v in table[label].values()))
    bursts: dict[int, list[int]] = {}
    for e in events:
        bursts.setdefault(e.deadline_ms, []).append(e.at_ms - e.deadline_ms)
    burst_max = sorted(max(v) for v in bursts.values())
    worst = sorted(bursts.items(), key=lambda kv: -max(kv[1]))[:3]
    print(
        f"per deadline second ({len(bursts)}): max delay median {percentile(burst_max, 0.5)} ms; worst: "
        + ", ".join(
            f"+{(dl - run.first_deadline_ms) / 1000:.0f} s ({len(v)} sessions, "
            f"p50 {percentile(sorted(v), 0.5)} max {max(v)} ms)"
            for dl, v in worst
        )
    )
    shares = [
        f"<= {ms} ms {sum(d <= ms for d in delays) / max(len(delays), 1):.2%}" for ms in DELAY_BUCKETS_MS
    ]
    print("share of events by delay: " + ", ".join(shares))
    p99 = percentile(delays, 0.99)
    mode = "sweeper + keyspace notifications" if args.notifications else "sweeper alone"
    met = len(events) == run.created and not run.timed_out and p99 <= TARGET_P99_MS
    print(
        f"p99 <= {TARGET_P99_MS:.0f} ms ({mode}, {run.created} live sessions): "
        f"{'met' if met else 'MISSED'} (p99 {p99} ms)"
    )
    once = (
        len(events) == run.created
        and run.duplicates == 0
        and run.unknown == 0
        and run.counted_expired == run.created
        and run.live_after_expiry == 0
    )
    print(
        f"exactly once: {'yes' if once else 'NO'} - {len(events)} sessions with an event, "
        f"{run.created - len(events)} without, {run.duplicates} duplicate events, {run.unknown} for "
        f"unknown ids; shards counted {run.counted_expired} expired events, {run.live_after_expiry} "
        "sessions still live"
    )
    return {
        "expired": len(events),
        "seconds": span,
        "per_second": rate,
        "deadline_span_seconds": dl_span,
        "reasons": dict(reasons),
        "delay_ms": table,
        "duplicates": run.duplicates,
        "unknown": run.unknown,
        "counted_expired": run.counted_expired,
        "live_after_expiry": run.live_after_expiry,
        "exactly_once": once,
        "timed_out": run.timed_out,
        "p99_met": met,
    }


def _report_cpu(run: Run, nodes: Sequence[Node], *, live: bool) -> dict[str, Any]:
    if run.window is None:
        return {}
    start, end = run.window
    wall = max(end.wall - start.wall, 1e-9)
    shards_cpu = end.shards - start.shards
    coord_cpu = end.coordinator - start.coordinator
    node_cpu = [after - before for before, after in zip(start.nodes, end.nodes, strict=True)]
    ours = sum(node_cpu) + shards_cpu + coord_cpu
    other = max(0.0, (end.machine - start.machine) - ours) / wall
    ended = max(len(run.events), 1)
    print(f"CPU over the expiry window ({wall:.1f} s, first deadline to the last event):")
    print(
        f"  shards {shards_cpu:.2f} s ({shards_cpu / wall:.2f} cores, {1e6 * shards_cpu / ended:.0f} "
        "µs/session, Redis's own expiry of the session hashes included); this process "
        f"({'stream reader' if live else 'counter polling'}) {coord_cpu:.2f} s; other processes "
        f"{other:.2f} cores"
    )
    rows = []
    for node, cpu in zip(nodes, node_cpu, strict=True):
        calls = node.final.get("calls", {})
        expire = calls.get("expire_sessions", {"count": 0, "seconds": 0.0})
        claims = calls.get("claim_due_partitions", {"count": 0})
        expired = int(node.final.get("expired", 0))
        mean_ms = 1e3 * expire["seconds"] / max(expire["count"], 1)
        print(
            f"  node {node.index}: CPU {cpu:.2f} s ({cpu / wall:.2f} cores, "
            f"{1e6 * cpu / max(expired, 1):.0f} µs/session ended); ended {expired}; expire_sessions "
            f"calls {expire['count']} (mean {mean_ms:.1f} ms), claim calls {claims['count']}, "
            f"notifications {node.final.get('notifications', 0)}, errors {node.final.get('errors', 0)}; "
            f"whole-life CPU {node.final.get('cpu_seconds', 0):.2f} s"
        )
        rows.append({"window_cpu": cpu, **node.final})
    return {
        "seconds": wall,
        "shards_cpu": shards_cpu,
        "coordinator_cpu": coord_cpu,
        "other_cores": other,
        "nodes": rows,
    }


def report(args: argparse.Namespace, run: Run, nodes: Sequence[Node]) -> dict[str, Any]:
    """Print the results; return them as data."""
    mode = "sweeper + keyspace notifications" if args.notifications else "sweeper alone"
    print(
        f"\n{mode}; {args.nodes} node(s), {args.shards} shards, sweep interval {args.interval} s, "
        f"idle timeout {args.idle} s, CLAIM_BATCH {args.claim_batch or sweeper_module.CLAIM_BATCH}"
    )
    create = {
        "sessions": run.created,
        "errors": run.create_errors,
        "seconds": run.create_seconds,
        "per_second": run.created / max(run.create_seconds, 1e-9),
        "client_cpu_us_per_session": 1e6 * run.create_cpu_seconds / max(run.created, 1),
        "live_after_create": run.live_after_create,
        "margin_seconds": run.margin_seconds,
    }
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "create": create,
        "memory": _report_memory(run),
        "events": _report_events(args, run),
        "window": _report_cpu(run, nodes, live=args.live_read),
    }


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def write_events_csv(path: Path, run: Run) -> None:
    """One row per `expired` event: shard, deadline ms, at ms, read ms (0 unless --live-read), why."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["shard", "deadline_ms", "at_ms", "seen_ms", "why"])
        for e in sorted(run.events.values(), key=lambda e: (e.at_ms, e.shard)):
            writer.writerow([e.shard, e.deadline_ms, e.at_ms, e.seen_ms, e.reason])


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS)
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="sweeper processes")
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    parser.add_argument(
        "--create-seconds",
        type=float,
        default=DEFAULT_CREATE_SECONDS,
        help="pace the creation over this long (0 = as fast as it goes)",
    )
    parser.add_argument("--idle", type=int, default=DEFAULT_IDLE_SECONDS, help="SSO idle timeout, s")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="creates in flight")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help=f"sweep interval, s (default {DEFAULT_EVENTS_SWEEP_INTERVAL_SECONDS}; "
        f"{NOTIFICATIONS_INTERVAL_SECONDS} with --notifications)",
    )
    parser.add_argument("--notifications", action="store_true", help="keyspace listener on as well")
    parser.add_argument(
        "--same-deadline",
        action="store_true",
        help="create every session at one frozen second (a TestClock): all come due at once",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="bound of the run, s")
    parser.add_argument(
        "--census",
        action="store_true",
        help="count the keys and their bytes by kind (SCAN), after create and expiry",
    )
    parser.add_argument(
        "--claim-batch",
        type=int,
        default=0,
        help="experiment: the nodes' sweeper.CLAIM_BATCH (0 = the module's own)",
    )
    parser.add_argument(
        "--live-read",
        action="store_true",
        help="read the streams while the nodes sweep (also measures when a reader sees each event)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--events-csv", type=Path, help="also write every expired event's times here")
    args = parser.parse_args(argv)
    if args.interval is None:
        args.interval = DEFAULT_EVENTS_SWEEP_INTERVAL_SECONDS
        if args.notifications:
            args.interval = NOTIFICATIONS_INTERVAL_SECONDS
    if not 1 <= args.sessions <= 2_000_000:
        parser.error("--sessions must be between 1 and 2000000")
    if not 1 <= args.nodes <= 8 or not 1 <= args.shards <= 16:
        parser.error("--nodes must be 1..8 and --shards 1..16")
    if not 0 <= args.create_seconds <= 600 or not 1 <= args.concurrency <= 1024:
        parser.error("--create-seconds must be 0..600 and --concurrency 1..1024")
    if not 0.01 <= args.interval <= 60 or not 1 <= args.idle <= 3600:
        parser.error("--interval must be 0.01..60 and --idle 1..3600")
    if not 0 <= args.claim_batch <= 4096:
        parser.error("--claim-batch must be 0..4096")
    if not 10 <= args.timeout <= 3600:
        parser.error("--timeout must be 10..3600")
    if args.idle <= args.create_seconds:
        print(
            "warning: --idle <= --create-seconds: deadlines pass while sessions are still being created",
            file=sys.stderr,
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, as `_node`, one sweeper process); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_node"]:
        node_parser = argparse.ArgumentParser(prog="bench_expiry.py _node")
        node_parser.add_argument("--shard-urls", required=True)
        node_parser.add_argument("--interval", type=float, required=True)
        node_parser.add_argument("--claim-batch", type=int, default=0)
        node_parser.add_argument("--notifications", action="store_true")
        node_args = node_parser.parse_args(argv[1:])
        configure_logging("warning", json=False)
        asyncio.run(
            _node_main(
                json.loads(node_args.shard_urls),
                notifications=node_args.notifications,
                interval=node_args.interval,
                claim_batch=node_args.claim_batch,
            )
        )
        return 0
    args = _parse(argv)
    configure_logging("warning", json=False)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C must stop everything even where SIGINT was ignored at start (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="session-store-bench-expiry-"))
    shards = EmbeddedShards(tmp, args.shards, appendonly=False)
    nodes: list[Node] = []
    try:
        procs = shards.start()
        shard_urls = {p.name: p.url for p in procs}
        for i in range(args.nodes):
            nodes.append(start_node(i, shard_urls, args))
        run = asyncio.run(run_benchmark(args, shard_urls, nodes, shards.pids()))
        for node in nodes:
            node.stop()
        data = report(args, run, nodes)
        if args.json:
            args.json.write_text(json.dumps(data, indent=2) + "\n")
        if args.events_csv:
            write_events_csv(args.events_csv, run)
        return 0 if data["events"]["exactly_once"] and not run.timed_out else 1
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    finally:
        for node in nodes:
            node.kill()
        shards.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
