"""How long a Redis Cluster slot migration pauses the partition group in its slot, and what callers see.

On the Redis Cluster backend a partition group (1/16 of the users) is one hash slot. While its slot
migrates, a script whose keys are split between the source and the target answers TRYAGAIN; the
service keeps retrying it (up to 0.5 s per try, 12 tries), so a caller waits until its own deadline
(the Python client's default: 5 s per call). This benchmark puts
`--sessions` sessions into one group on a local 3-primary cluster (no replicas, AOF off), runs a load
of touches and creates on that group and on another one through an in-process service and the Python
client, moves the group's slot with `MIGRATE` in batches of `--batch` keys (what `redis-cli --cluster
reshard` does), and reports: keys moved, migration time, keys/s, and for each group the calls made
while the slot was open, their errors by type and their latency (p50/p99/max; the max is the pause a
caller saw).

Usage:
    .venv/bin/python scripts/bench_slot_migration.py                       # 6 250 sessions (100 000 / 16)
    .venv/bin/python scripts/bench_slot_migration.py --sessions 1000,6250,25000 --batch 10,100

Bounded by --timeout (300 s); every server it starts is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from load import percentile

from session_store import AsyncSessionStoreClient, SessionStoreError
from session_store.config import Settings, ShardSettings
from session_store.embedded import EmbeddedCluster, start_cluster
from session_store.logging import configure_logging
from session_store.model.ids import user_partition
from session_store.server import SessionStoreServer
from session_store.storage import keys

REALM = "migration-bench"
GROUPS = 16
MOVED_GROUP = 0x3
OTHER_GROUP = 0xA
FILL_CONCURRENCY = 64
LOAD_WORKERS = 8


def users_in_group(group: int, count: int) -> list[str]:
    """`count` user ids whose partitions are in `group`."""
    found: list[str] = []
    for i in itertools.count():
        user = f"user-{i}"
        if keys.group_of(user_partition(REALM, user), GROUPS) == group:
            found.append(user)
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


@dataclass
class Calls:
    """The calls of one group's load: latency (s) and error type of each, by when it started."""

    latencies: list[tuple[float, float]] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)

    def window(self, start: float, end: float) -> tuple[list[float], Counter[str]]:
        """Latencies and errors of the calls started in [start, end]."""
        lat = sorted(d for t, d in self.latencies if start <= t <= end)
        return lat, Counter(e for t, e in self.errors if start <= t <= end)


async def fill(store: AsyncSessionStoreClient, users: list[str]) -> list[str]:
    """One session per user; returns their ids."""
    ids: list[str] = []
    queue = iter(users)

    async def worker() -> None:
        for user in queue:
            ids.append((await store.create_user_session(REALM, user, login_username=user)).id)

    await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))
    return ids


async def load(
    store: AsyncSessionStoreClient,
    users: list[str],
    sessions: list[str],
    *,
    calls: Calls,
    stop: asyncio.Event,
    worker: int,
) -> None:
    """Touch an existing session, then log a user in, round after round, until `stop`."""
    for n in itertools.count(worker):
        if stop.is_set():
            return
        for verb in ("touch", "create"):
            started = time.monotonic()
            try:
                if verb == "touch":
                    await store.touch_user_session(REALM, sessions[n % len(sessions)])
                else:
                    await store.create_user_session(REALM, users[n % len(users)])
            except SessionStoreError as exc:
                calls.errors.append((started, f"{type(exc).__name__} ({exc.message[:50]})"))
            calls.latencies.append((started, time.monotonic() - started))


async def one_run(cluster: EmbeddedCluster, sessions: int, batch: int) -> str:
    """Fill, load, migrate the moved group's slot once; the report line."""
    shards = (ShardSettings(name="cluster", url=cluster.url),)
    srv = SessionStoreServer(Settings(listen="127.0.0.1:0", grace_seconds=0.5), shards)
    await srv.start()
    try:
        async with AsyncSessionStoreClient(f"127.0.0.1:{srv.port}") as store:
            moved_users = users_in_group(MOVED_GROUP, sessions)
            other_users = users_in_group(OTHER_GROUP, 200)
            moved_ids = await fill(store, moved_users)
            other_ids = await fill(store, other_users)
            by_group = {MOVED_GROUP: Calls(), OTHER_GROUP: Calls()}
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(
                    load(store, moved_users, moved_ids, calls=by_group[MOVED_GROUP], stop=stop, worker=w)
                )
                for w in range(LOAD_WORKERS)
            ]
            tasks.append(
                asyncio.create_task(
                    load(store, other_users, other_ids, calls=by_group[OTHER_GROUP], stop=stop, worker=0)
                )
            )
            await asyncio.sleep(1.0)
            slot = EmbeddedCluster.slot_of(keys.group_tag(MOVED_GROUP, GROUPS))
            source = cluster.node_for_slot(slot)
            target = next(m for m in cluster.masters if m.port != source.port)
            started = time.monotonic()
            moved = await asyncio.to_thread(cluster.migrate_slot, slot, target, batch=batch)
            ended = time.monotonic()
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
            counted = await store.count_sessions(REALM)
    finally:
        await srv.stop(grace=0)
    seconds = ended - started
    line = (
        f"sessions {sessions:>6}  batch {batch:>4}  keys {moved:>6}  migration {seconds * 1000:8.0f} ms "
        f"({moved / seconds if seconds else 0:8.0f} keys/s)  counted {counted}"
    )
    for group, calls in by_group.items():
        lat, errors = calls.window(started, ended)
        err = ", ".join(f"{name} {n}" for name, n in sorted(errors.items())) or "none"
        p50, p99, top = (percentile(lat, q) * 1000 for q in (0.5, 0.99, 1.0))
        line += (
            f"\n    group {group:x} during: {len(lat):>5} calls, p50 {p50:6.1f} ms "
            f"p99 {p99:7.1f} ms max {top:7.1f} ms, errors: {err}"
        )
    return line


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", json=False)
    with tempfile.TemporaryDirectory(prefix="session-store-slot-migration-") as root:
        cluster = start_cluster(Path(root), 3, appendonly=False)
        try:
            for sessions in args.sessions:
                for batch in args.batch:
                    cluster.wait_stable()
                    cluster.flushall()
                    print(await one_run(cluster, sessions, batch), flush=True)
        finally:
            cluster.stop()


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=_ints, default=[6250], help="sessions in the moved group (list)")
    parser.add_argument("--batch", type=_ints, default=[100], help="keys per MIGRATE (list)")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on the whole run (s)")
    parsed = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(main(parsed), parsed.timeout))
    except TimeoutError:
        sys.exit(f"timed out after {parsed.timeout} s")
