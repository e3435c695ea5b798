"""Scaling and resharding benchmark of session-store: throughput over shards and processes, and a live move.

The job, in three parts, each bounded and each on its own processes (stopped by PID at the end):

scaling
    Create and touch through the service (`AsyncSessionStoreClient` in load-client processes) with 1, 2
    and 4 standalone redis-server shards, each served by 1 and by 2 service processes sharing one port
    (SO_REUSEPORT; the load clients open several channels, each its own TCP connection, which the
    kernel spreads over the processes). Beside them, the raw-Redis baseline: EVALSHA of the same
    create and touch scripts from the same load clients (redis.asyncio, as `scripts/bench.py`'s
    `redis` case), with keys and arguments as `SessionRepository` builds them. Every service is up for
    the whole part and the cases run interleaved, round after round in a rotating order, so the VM's
    drift hits them alike. It reports ops/s, per-process ops/s, latency, CPU per call, and the ratios
    per-process ops/s with N shards / with 1 shard (target for 4 shards: >= 0.95).
cluster
    The Redis Cluster backend: the same create and touch cases through the service (1 and 2 processes)
    on a local Redis Cluster of `--cluster-primaries` primaries (3, no replicas, AOF off as the shards),
    beside its raw-Redis baseline: EVALSHA of the same scripts with the same keys in the grouped layout,
    sent by redis-py's own cluster client (`redis.asyncio.RedisCluster`, what a hand-rolled wrapper
    would use). With `scaling` in the same run, its cases are interleaved with the standalone ones and
    the report adds cluster ÷ standalone ratios.
move
    One shard of weight 9 holds `--sessions` sessions (100 000; created through the storage layer the
    service runs, `SessionRepository`, pipelined, in the load-client processes); a second shard of
    weight 1 is added with `Rebalancer.add_shard` (this process is the mover, as `session-store
    cluster add-shard` would be), which moves 410 of the 4096 partitions at `--rate` partitions/s,
    while a load of creates, touches and gets runs against the service through the Python client.
    It reports the move's duration, keys copied/s, the pause per partition (freeze to release:
    p50/p99/max), the errors the load's callers saw, the service's moved/frozen retries (its
    Prometheus counter `session_store_partition_retries_total`), the load's latency before, during
    and after the move (also split by whether the call's partition was one of those moved), the cores
    each process kept busy, where the mover's time went (by step), and whether every session is still
    counted afterwards.

Usage:
    .venv/bin/python scripts/bench_cluster.py            # = make bench-cluster (~3.5 min)
    .venv/bin/python scripts/bench_cluster.py --quick    # ~1 min: 1 round of 1 s, 20 000 sessions
    .venv/bin/python scripts/bench_cluster.py --parts move --rate 1000 --load-rate 0
    .venv/bin/python scripts/bench_cluster.py --parts scaling --shards 1,4 --processes 1 --one-server

Bounded by --timeout (900 s): on it, on Ctrl-C or SIGTERM every started process is stopped by PID.

The `_worker` sub-command is the load-client process this script starts for itself. It
reuses `scripts/bench.py` (load-client worker, child processes, CPU accounting, percentiles).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import bench
import grpc
import grpc.aio
import redis
import redis.asyncio as aioredis
from bench import Child, Sample
from redis.asyncio.cluster import ClusterNode

from session_store import AsyncSessionStoreClient, SessionStoreError
from session_store.config import (
    DEFAULT_CLUSTER_GROUPS,
    RedisSettings,
    ShardSettings,
    is_cluster_url,
    parse_cluster_url,
)
from session_store.embedded import EmbeddedCluster, RedisProcess, free_port, start_cluster, start_redis
from session_store.logging import configure_logging
from session_store.model.clock import SystemClock
from session_store.model.ids import PARTITION_COUNT, home_partition, user_partition
from session_store.model.session import NewUserSession
from session_store.storage import keys
from session_store.storage._scripts import load_scripts
from session_store.storage.access import build_shards
from session_store.storage.policies import PolicyStore
from session_store.storage.rebalance import DEFAULT_PARTITIONS_PER_SECOND, MoveProgress, Rebalancer
from session_store.storage.router import Router
from session_store.storage.sessions import SessionRepository
from session_store.storage.shard import Shard

REALM = bench.REALM
CLIENT_ID = bench.CLIENT_ID
PARTS = ("scaling", "cluster", "move")
DEFAULT_SHARD_COUNTS = (1, 2, 4)
DEFAULT_PROCESS_COUNTS = (1, 2)
DEFAULT_SECONDS = 2.0
DEFAULT_ROUNDS = 3
DEFAULT_WARMUP_SECONDS = 0.5
DEFAULT_CONCURRENCY = 64
DEFAULT_CLIENTS = 2
DEFAULT_CHANNELS = 4
"""Channels per load client: 8 TCP connections in all, so the kernel can spread them over 2 processes."""
DEFAULT_SESSIONS = 100_000
DEFAULT_SOURCE_WEIGHT = 9
DEFAULT_TARGET_WEIGHT = 1
"""Weights 9 and 1: the new shard takes 1/10 of the 4096 partitions (410)."""
DEFAULT_LOAD_RATE = 1000.0
"""Calls/s of the load during the move (all load clients): about half of what the service serves at
full load here, so its latency is the service's, not a queue's; 0 = closed loop at full load."""
DEFAULT_LOAD_CONCURRENCY = 64
DEFAULT_PHASE_SECONDS = 4.0
"""Load before the move starts and after it ends."""
DEFAULT_TIMEOUT_SECONDS = 900.0
FILL_CONCURRENCY = 256
"""Creates in flight per load client while filling the source shard (auto-pipelined)."""
FILL_SECONDS_PER_SESSION = 0.002
"""Answer timeout of the fill: at least 500 creates/s."""
SESSIONS_PER_TARGET = 400
"""Sessions (with one client session) each load client creates per service for the touch case."""
SCALING_TARGET = 0.95
PAUSE_P99_TARGET_MS = 50.0
MOVE_TIMEOUT_SECONDS = 600.0
CLUSTER_SET = 0
"""The shard-set key (`Case.shards`) of the Redis Cluster backend's cases."""
DEFAULT_CLUSTER_PRIMARIES = 3
OP_NAMES = ("create", "touch", "get")
"""The load during the move: call k of a load client is OP_NAMES[k % 3]."""


# --------------------------------------------------------------------------------------------------
# Script calls as SessionRepository builds them (the raw-Redis baseline)
# --------------------------------------------------------------------------------------------------


def create_call(shard_names: Sequence[str], user_id: str, n: int) -> tuple[str, list[str], list[str]]:
    """(owner shard, KEYS, ARGV) of one create_user_session call, guard keys included."""
    return bench.create_script_call(shard_names, user_id, n)


def touch_call(shard_names: Sequence[str], session_id: str) -> tuple[str, list[str], list[str]]:
    """(owner shard, KEYS, ARGV) of one touch_user_session call naming the bench's client session."""
    p = home_partition(session_id)
    script_keys = [
        keys.session(p, session_id, offline=False),
        keys.pointer(p, session_id),
        keys.realm_index(p, REALM, offline=False),
        keys.client_index(p, REALM, offline=False),
        *keys.event_keys(p),
        *keys.GUARD_KEYS,
    ]
    args = ["", *bench._POLICY_ARGS, REALM, str(p), "0", "0", "0", CLIENT_ID]
    return bench._owner(shard_names, p), script_keys, args


def grouped(script_keys: Sequence[str], partition: int) -> list[str]:
    """The keys of a script call in the Redis Cluster backend's layout (storage/keys.py, "grouped")."""
    group = keys.group_of(partition, DEFAULT_CLUSTER_GROUPS)
    return [keys.in_group(k, group, DEFAULT_CLUSTER_GROUPS) for k in script_keys]


def _raw_cluster(url: str) -> aioredis.RedisCluster:
    """redis-py's cluster client on the seeds of a `redis+cluster://` URL (the raw baseline's)."""
    seeds = parse_cluster_url(url).nodes
    return aioredis.RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in seeds],
        decode_responses=True,
        max_connections=bench.DEFAULT_CONCURRENCY,
        socket_timeout=bench.CALL_TIMEOUT_SECONDS,
    )


# --------------------------------------------------------------------------------------------------
# The load-client process: bench.py's worker, with several targets, raw calls and a timed load
# --------------------------------------------------------------------------------------------------


@dataclass
class Timeline:
    """The calls of the load during a move and what each one met."""

    start_at: float
    clients: list[AsyncSessionStoreClient]
    filled: list[str]
    next_user: Callable[[], tuple[str, int]]
    rng: random.Random
    began_ms: list[float] = field(default_factory=list)
    latency_us: list[int] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    errors: list[tuple[float, int, str]] = field(default_factory=list)
    created: int = 0

    async def one(self, k: int, scheduled: float) -> None:
        """Call k: a create, a touch or a get of a random filled session; record it."""
        op = k % len(OP_NAMES)
        client = self.clients[k % len(self.clients)]
        began = round((scheduled - self.start_at) * 1000, 1)
        try:
            if op == 0:
                user, n = self.next_user()
                partition = user_partition(REALM, user)
                await client.create_user_session(REALM, user, **bench.create_fields(user, n))
                self.created += 1
            else:
                sid = self.filled[self.rng.randrange(len(self.filled))]
                partition = home_partition(sid)
                if op == 1:
                    await client.touch_user_session(REALM, sid)
                else:
                    await client.get_user_session(REALM, sid)
        except (grpc.RpcError, SessionStoreError) as exc:
            self.errors.append((began, op, type(exc).__name__))
            return
        self.began_ms.append(began)
        self.latency_us.append(int((time.monotonic() - scheduled) * 1e6))
        self.ops.append(op)
        self.partitions.append(partition)

    async def paced(self, rate: float, concurrency: int, stop: asyncio.Event) -> None:
        """Call k is due at start_at + k / rate; at most `concurrency` in flight."""
        gate = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def gated(k: int, scheduled: float) -> None:
            try:
                await self.one(k, scheduled)
            finally:
                gate.release()

        k = 0
        while not stop.is_set():
            scheduled = self.start_at + k / rate
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            await gate.acquire()
            task = asyncio.create_task(gated(k, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        await asyncio.gather(*tasks)

    async def closed(self, concurrency: int, stop: asyncio.Event) -> None:
        """`concurrency` calls in flight, each followed at once by the next."""

        async def slot(i: int) -> None:
            k = i
            while not stop.is_set():
                await self.one(k, time.monotonic())
                k += concurrency

        await asyncio.gather(*(slot(i) for i in range(concurrency)))

    def answer(self) -> dict[str, Any]:
        """The records, as the JSON answer."""
        return {
            "began_ms": self.began_ms,
            "latency_us": self.latency_us,
            "ops": self.ops,
            "partitions": self.partitions,
            "errors": self.errors,
            "created": self.created,
        }


@dataclass
class ClusterWorker(bench.Worker):
    """bench.py's load client, switched between services and shard sets by each command."""

    with_repository: bool = False
    clients_by_target: dict[str, list[AsyncSessionStoreClient]] = field(default_factory=dict)
    ids_by_target: dict[str, list[str]] = field(default_factory=dict)
    pools_by_shards: dict[str, dict[str, aioredis.Redis]] = field(default_factory=dict)
    clusters: dict[str, aioredis.RedisCluster] = field(default_factory=dict)
    raw_cluster: aioredis.RedisCluster | None = None
    """The cluster of the next raw calls (None: standalone shards, `redis_clients`)."""
    filled: list[str] = field(default_factory=list)
    """Sessions this load client created while filling the source shard (the move's load reads them)."""

    async def start(self) -> None:
        """Clients of the first service; a storage stack only for filling (a Router over every shard
        of several services would seed maps of its own on them)."""
        self.use(self.service, "")
        if self.with_repository:
            self.router = Router(
                {name: Shard(name, url) for name, url in self.shard_urls.items()}, refresh_seconds=0
            )
            await self.router.connect()
            self.repository = SessionRepository(self.router, PolicyStore(self.router), SystemClock())
        rng = random.Random(self.index)
        self.users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(bench.USER_POOL)]

    def use(self, target: str, shards: str) -> None:
        """Make `target` the service of the next calls and `shards` the shard set of raw calls."""
        if target:
            if target not in self.clients_by_target:
                self.clients_by_target[target] = [
                    AsyncSessionStoreClient(target, channel_options=self.channel_options())
                    for _ in range(self.channels)
                ]
            self.ids_by_target.setdefault(target, [])
            self.service = target
            self.clients = self.clients_by_target[target]
            self.session_ids = self.ids_by_target[target]
        if shards and is_cluster_url(shards):
            if shards not in self.clusters:
                self.clusters[shards] = _raw_cluster(shards)
            self.raw_cluster = self.clusters[shards]
        elif shards:
            self.raw_cluster = None
            if shards not in self.pools_by_shards:
                self.pools_by_shards[shards] = {
                    name: bench._redis_pool(url) for name, url in bench._parse_shards(shards).items()
                }
            self.redis_clients = self.pools_by_shards[shards]

    async def prepare_target(self, command: dict[str, Any]) -> dict[str, Any]:
        """bench.py's prepare (sessions with one client session each) on one service."""
        self.use(str(command["target"]), "")
        answer = await self.prepare(int(command["sessions"]))
        self.ids_by_target[self.service] = self.session_ids
        return answer

    async def run(self, command: dict[str, Any]) -> dict[str, Any]:
        """bench.py's timed run, on the service and shard set the command names."""
        self.use(str(command.get("target", "")), str(command.get("shards", "")))
        return await super().run(command)

    def operation(self, case: str, target: str, payload_bytes: int) -> Callable[[int], Awaitable[object]]:
        """bench.py's cases plus `redis-create` and `redis-touch` (EVALSHA, guard keys included)."""
        if case in ("redis-create", "redis-touch"):
            return self._raw_redis(case.removeprefix("redis-"))
        return super().operation(case, target, payload_bytes)

    def _raw_redis(self, verb: str) -> Callable[[int], Awaitable[object]]:
        scripts = load_scripts()
        sha = scripts[f"{verb}_user_session"].sha
        names, pools, ids = list(self.redis_clients) or ["-"], self.redis_clients, self.session_ids
        cluster = self.raw_cluster

        async def call(slot: int) -> object:
            if verb == "create":
                user, n = self.next_user()
                shard, script_keys, args = create_call(names, user, n)
            else:
                self.counter += 1
                shard, script_keys, args = touch_call(names, ids[self.counter % len(ids)])
            if cluster is not None:
                # The partition is the script's ARGV after the realm (create: of the new session id).
                partition = keys.partition_of(script_keys[0])
                script_keys = grouped(script_keys, partition)
                return await cluster.evalsha(sha, len(script_keys), *script_keys, *args)
            return await pools[shard].evalsha(sha, len(script_keys), *script_keys, *args)

        return call

    async def fill(self, count: int, concurrency: int) -> dict[str, Any]:
        """Create `count` sessions through `SessionRepository` (the service's storage code), pipelined."""
        repository = self.repository
        if repository is None:
            raise RuntimeError("this load client was started without --repository")
        left = count
        errors = 0
        began = time.monotonic()

        async def loop() -> None:
            nonlocal left, errors
            while left > 0:
                left -= 1
                user, n = self.next_user()
                new = NewUserSession(realm=REALM, user_id=user, **bench.create_fields(user, n))
                try:
                    self.filled.append((await repository.create_user_session(new)).id)
                except SessionStoreError:
                    errors += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.monotonic() - began
        # The load during the move goes through the service only; this router would not follow the map.
        if self.router is not None:
            await self.router.close()
        self.router, self.repository = None, None
        return {"created": len(self.filled), "errors": errors, "seconds": elapsed}

    async def timeline(self, command: dict[str, Any], stop: asyncio.Event) -> dict[str, Any]:
        """Creates, touches and gets (in turn) from `start_at` until `stop` is set or `max_seconds`
        pass: paced at `rate` calls/s (latency counted from each call's scheduled time, so a stall
        shows in full) or, at rate 0, `concurrency` calls in a closed loop.

        Returns every call's start (ms after `start_at`), latency (µs) and operation, and every error.
        """
        rate, concurrency = float(command["rate"]), int(command["concurrency"])
        start_at, max_seconds = float(command["start_at"]), float(command["max_seconds"])
        record = Timeline(start_at, self.clients, self.filled, self.next_user, random.Random(self.index))
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu_before = time.process_time()
        load = asyncio.create_task(
            record.paced(rate, concurrency, stop) if rate > 0 else record.closed(concurrency, stop)
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max_seconds)
        stop.set()
        await load
        return {**record.answer(), "cpu_s": time.process_time() - cpu_before}

    async def close(self) -> None:
        """Every channel and pool of every target and shard set."""
        for clients in self.clients_by_target.values():
            for client in clients:
                await client.close()
        self.clients = []
        for pools in self.pools_by_shards.values():
            for pool in pools.values():
                await pool.aclose()
        for cluster in self.clusters.values():
            await cluster.aclose()
        self.redis_clients = {}
        await super().close()


async def _worker_main(args: argparse.Namespace) -> None:
    configure_logging("warning", json=True)  # to stderr: stdout carries the answers
    worker = ClusterWorker(
        service=args.service,
        shard_urls=bench._parse_shards(args.shards),
        channels=args.channels,
        index=args.index,
        with_repository=args.repository,
    )
    await worker.start()
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            kind = command["cmd"]
            if kind == "quit":
                return
            if kind == "prepare":
                answer = await worker.prepare_target(command)
            elif kind == "fill":
                answer = await worker.fill(int(command["count"]), int(command["concurrency"]))
            elif kind == "timeline":
                # Runs until the next line ("stop") arrives, or its own bound.
                stop = asyncio.Event()
                load = asyncio.create_task(worker.timeline(command, stop))
                await loop.run_in_executor(None, sys.stdin.readline)
                stop.set()
                answer = await load
            else:
                answer = await worker.run(command)
            print(json.dumps(answer), flush=True)
    finally:
        await worker.close()


# --------------------------------------------------------------------------------------------------
# The coordinator
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One measured case: an operation on a service configuration (procs 0: raw Redis, no service)."""

    op: str
    shards: int
    procs: int

    @property
    def name(self) -> str:
        """As printed."""
        where = f"{self.shards} shard{'s' if self.shards > 1 else ''}" if self.shards else "cluster"
        if self.procs == 0:
            return f"redis-{self.op} {where}"
        return f"{self.op} {where}, {self.procs} proc{'s' if self.procs > 1 else ''}"


@dataclass
class Service:
    """The service processes sharing one port over one shard set."""

    shards: int
    procs: int
    target: str
    children: list[Child]
    connections: list[int] = field(default_factory=list)
    """Load-client TCP connections each process accepted (the kernel's SO_REUSEPORT spread)."""


@dataclass
class Measured:
    """One case in one round, with the CPU split among the service processes."""

    sample: Sample
    split: list[float]
    idle_cores: float
    """Cores used meanwhile by the service processes that were not measured."""


@dataclass
class Rig:
    """Everything started for one part: redis-servers, service processes, load clients."""

    tmp: Path
    children: list[Child] = field(default_factory=list)
    redis_procs: list[RedisProcess] = field(default_factory=list)
    clusters: list[EmbeddedCluster] = field(default_factory=list)
    workers: list[Child] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, pipes: bool) -> Child:
        """A child in a session of its own (Ctrl-C reaches only us; we stop it by PID)."""
        log = (self.tmp / f"{name}.log").open("w")
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            argv,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else log,
            stderr=log,
            env=env,
            text=True,
            start_new_session=True,
        )
        log.close()
        child = Child(name, process)
        self.children.append(child)
        return child

    def start_shards(self, prefix: str, count: int) -> list[RedisProcess]:
        """`count` redis-servers (AOF off, as bench.py) named shard-0..; stopped by `stop`."""
        started = []
        for i in range(count):
            proc = start_redis(f"shard-{i}", self.tmp / prefix / f"shard-{i}", appendonly=False)
            self.redis_procs.append(proc)
            started.append(proc)
        return started

    def start_service(
        self, name: str, urls: str, procs: int, *, metrics: str = "", connections: int = 0
    ) -> tuple[str, list[Child]]:
        """`procs` service processes on one port over the shards `urls`; waits until each serves."""
        port = free_port()
        children = []
        for i in range(procs):
            health = free_port()
            env = {
                **os.environ,
                "SESSION_STORE_REDIS_URLS": urls,
                "SESSION_STORE_LISTEN": f"127.0.0.1:{port}",
                "SESSION_STORE_HEALTH_LISTEN": f"127.0.0.1:{health}",
                "SESSION_STORE_METRICS_LISTEN": metrics,
                "SESSION_STORE_LOG_LEVEL": "warning",
                "SESSION_STORE_GRACE_SECONDS": "0",
                "SESSION_STORE_REUSE_PORT": "true",  # the processes of one case share its port
            }
            if connections:
                env["SESSION_STORE_REDIS_CONNECTIONS"] = str(connections)
            child = self.spawn(
                f"{name}-{i}", [sys.executable, "-m", "session_store", "serve"], env=env, pipes=False
            )
            bench._wait_serving(f"127.0.0.1:{health}", child)
            children.append(child)
        return f"127.0.0.1:{port}", children

    def start_workers(self, args: argparse.Namespace, service: str, shards: str, *, repository: bool) -> None:
        """The load-client processes; each answers once it is ready."""
        for i in range(args.clients):
            argv = [sys.executable, __file__, "_worker", "--service", service, "--shards", shards]
            argv += ["--channels", str(args.channels), "--index", str(i)]
            self.workers.append(
                self.spawn(f"client-{i}", argv + (["--repository"] if repository else []), pipes=True)
            )
        for worker in self.workers:
            worker.receive()

    def ask(
        self, commands: Sequence[dict[str, Any]], timeout: float = bench.ANSWER_TIMEOUT_SECONDS
    ) -> list[dict[str, Any]]:
        """One command to each load client (in order), then every answer."""
        for worker, command in zip(self.workers, commands, strict=True):
            worker.send(command)
        return [worker.receive(timeout) for worker in self.workers]

    def stop(self) -> None:
        """Load clients asked to quit, then every child by PID, then the redis-servers by PID."""
        for worker in self.workers:
            with contextlib.suppress(OSError, ValueError):
                worker.send({"cmd": "quit"})
        for child in reversed(self.children):
            child.stop()
        for proc in self.redis_procs:
            proc.stop()
        for cluster in self.clusters:
            cluster.stop()
        self.children, self.workers, self.redis_procs, self.clusters = [], [], [], []


def _accepted_connections(pids: Sequence[int], port: int) -> list[int]:
    """How many established TCP connections to local `port` each process holds (from /proc)."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    established.add(fields[9])
    counts = []
    for pid in pids:
        inodes: set[str] = set()
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
        counts.append(len(inodes & established))
    return counts


def _urls(procs: Sequence[RedisProcess]) -> str:
    return ",".join(f"{p.name}={p.url}" for p in procs)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


# -- part 1: scaling --------------------------------------------------------------------------------


@dataclass
class Scaling:
    """The scaling part: every shard set and service up at once, cases interleaved."""

    args: argparse.Namespace
    rig: Rig
    shard_sets: dict[int, list[RedisProcess]] = field(default_factory=dict)
    shard_urls: dict[int, str] = field(default_factory=dict)
    """`name=url,...` of each shard set (SESSION_STORE_REDIS_URLS)."""
    services: dict[tuple[int, int], Service] = field(default_factory=dict)
    samples: dict[Case, list[Measured]] = field(default_factory=dict)

    def sets(self) -> list[int]:
        """The shard sets measured: the standalone shard counts (part `scaling`), then the cluster's
        (part `cluster`)."""
        standalone = list(self.args.shard_counts) if "scaling" in self.args.parts else []
        return standalone + ([CLUSTER_SET] if "cluster" in self.args.parts else [])

    def start(self) -> None:
        """Shard sets, their services, load clients, and the touch sessions of every service."""
        if CLUSTER_SET in self.sets():
            cluster = start_cluster(
                self.rig.tmp / "redis-cluster", self.args.cluster_primaries, appendonly=False
            )
            self.rig.clusters.append(cluster)
            self.shard_sets[CLUSTER_SET] = cluster.masters
            self.shard_urls[CLUSTER_SET] = cluster.url
        for n in (n for n in self.sets() if n != CLUSTER_SET):
            if self.args.one_server:
                # Experiment: the shards are databases of one redis-server, so shard counts differ in
                # the service's routing and connections only, not in Redis processes sharing the cores.
                (server,) = self.shard_sets[n] = self.rig.start_shards(f"set-{n}", 1)
                self.shard_urls[n] = ",".join(
                    f"shard-{i}=redis://127.0.0.1:{server.port}/{i}" for i in range(n)
                )
            else:
                self.shard_sets[n] = self.rig.start_shards(f"set-{n}", n)
                self.shard_urls[n] = _urls(self.shard_sets[n])
        for n in self.sets():
            for p in self.args.process_counts:
                per_shard = self.args.redis_connections
                if self.args.same_connections:
                    per_shard = max(1, self.args.same_connections // n)
                target, children = self.rig.start_service(
                    f"service-{n}x{p}", self.shard_urls[n], p, connections=per_shard
                )
                self.services[(n, p)] = Service(n, p, target, children)
        first = next(iter(self.services.values()))
        self.rig.start_workers(self.args, first.target, "", repository=False)
        for service in self.services.values():
            self.rig.ask(
                [{"cmd": "prepare", "target": service.target, "sessions": SESSIONS_PER_TARGET}]
                * len(self.rig.workers)
            )
        print(
            "pids: "
            + "; ".join(f"{s.shards}x{s.procs} {[c.pid for c in s.children]}" for s in self.services.values())
            + f"; load clients {[w.pid for w in self.rig.workers]}"
            + f"; redis {[p.pid for p in self.rig.redis_procs]}",
            flush=True,
        )

    def cases(self) -> list[Case]:
        """Service cases of every configuration, then the raw-Redis cases of every shard set."""
        found = [
            Case(op, n, p)
            for n in self.sets()
            for p in self.args.process_counts
            for op in ("create", "touch")
        ]
        return found + [Case(op, n, 0) for n in self.sets() for op in ("create", "touch")]

    def measure(self, case: Case, seconds: float) -> Measured:
        """Run one case on every load client at once; merge what they measured."""
        shards = self.shard_sets[case.shards]
        # Raw calls touch the sessions prepared through the 1-process service of the same shards.
        service = self.services[(case.shards, case.procs or min(self.args.process_counts))]
        server_pids = [c.pid for c in service.children] if case.procs else []
        idle_pids = [c.pid for s in self.services.values() for c in s.children if c.pid not in server_pids]
        redis_pids = [p.pid for p in shards]
        client_pids = [w.pid for w in self.rig.workers]
        ours = [c.pid for c in self.rig.children] + [p.pid for p in self.rig.redis_procs] + [os.getpid()]
        ours += [pid for cluster in self.rig.clusters for pid in cluster.pids()]
        ours_before, machine_before, wall_before = (
            bench._total_cpu(ours),
            bench._machine_busy_seconds(),
            time.monotonic(),
        )
        idle_before = bench._total_cpu(idle_pids)
        each_before = [bench._cpu_seconds(p) for p in server_pids]
        before = {
            role: bench._total_cpu(pids) for role, pids in (("redis", redis_pids), ("client", client_pids))
        }
        start_at = time.monotonic() + 0.2
        per_client = bench._split(self.args.concurrency, len(self.rig.workers))
        op = f"redis-{case.op}" if case.procs == 0 else case.op
        commands = [
            {
                "cmd": "run",
                "case": op,
                "target": service.target,
                "shards": self.shard_urls[case.shards],
                "concurrency": concurrency,
                "start_at": start_at,
                "seconds": seconds,
            }
            for concurrency in per_client
        ]
        answers = self.rig.ask(commands, bench.ANSWER_TIMEOUT_SECONDS + seconds)
        wall = time.monotonic() - wall_before
        each = [bench._cpu_seconds(p) - b for p, b in zip(server_pids, each_before, strict=True)]
        after = {
            role: bench._total_cpu(pids) for role, pids in (("redis", redis_pids), ("client", client_pids))
        }
        other = (bench._machine_busy_seconds() - machine_before) - (bench._total_cpu(ours) - ours_before)
        ops = sum(a["ops"] for a in answers)
        cpu = {role: (after[role] - before[role]) * 1e6 / ops if ops else 0.0 for role in before}
        cpu["server"] = sum(each) * 1e6 / ops if ops and each else 0.0
        sample = Sample(
            ops=ops,
            seconds=max(a["elapsed"] for a in answers),
            latencies_us=[x for a in answers for x in a["latencies_us"]],
            errors=sum(a["errors"] for a in answers),
            cpu_us_per_op=cpu,
            other_cores=max(0.0, other / wall),
        )
        total = sum(each)
        split = [e / total for e in each] if total > 0 else []
        return Measured(sample, split, (bench._total_cpu(idle_pids) - idle_before) / wall)

    def run(self) -> None:
        """A warm-up of every case, then the rounds, rotating the order each round."""
        cases = self.cases()
        for case in cases:
            self.measure(case, self.args.warmup)
        # Every channel has made its connection by now (channels connect at their first call).
        for service in self.services.values():
            port = int(service.target.rsplit(":", 1)[1])
            service.connections = _accepted_connections([c.pid for c in service.children], port)
        for r in range(self.args.rounds):
            order = cases[r % len(cases) :] + cases[: r % len(cases)]
            for case in order:
                measured = self.measure(case, self.args.seconds)
                self.samples.setdefault(case, []).append(measured)
                s = measured.sample
                print(
                    f"round {r + 1}/{self.args.rounds} {case.name:<28} {s.rate:8.0f} ops/s"
                    + (f"  ({s.errors} errors)" if s.errors else ""),
                    flush=True,
                )

    def ratio(self, case: Case, reference: Case, *, per_process: bool = True) -> tuple[float, list[float]]:
        """Median over rounds of case ops/s ÷ reference ops/s (per service process), and each round's."""
        scale = (reference.procs / case.procs) if per_process and case.procs and reference.procs else 1.0
        rounds = [
            m.sample.rate / r.sample.rate * scale
            for m, r in zip(self.samples[case], self.samples[reference], strict=True)
            if r.sample.rate > 0
        ]
        return (statistics.median(rounds) if rounds else float("nan")), rounds

    def report(self, out: IO[str]) -> dict[str, Any]:
        """The table, the ratios against the targets; returned as data too."""
        args = self.args
        print(
            f"\nscaling: {args.clients} load-client processes x {args.channels} channels, "
            f"{args.concurrency} calls in flight; {args.rounds} rounds x {args.seconds} s per case "
            "(median of rounds; p50/p99 pool all rounds). CPU µs per call: srv = the service "
            "processes, redis = the shards, cli = the load clients; split = the service processes' "
            "shares of srv; other = cores busy in processes this script did not start; idle = cores used "
            "by the services not measured.",
            file=out,
        )
        if args.same_connections:
            conns = f"{args.same_connections} in all per service process, split over its shards (experiment)"
        else:
            conns = f"{args.redis_connections or 'the default number'} per shard per service process"
        print(f"Redis connections: {conns}", file=out)
        if args.one_server:
            print("Shards: the databases of one redis-server per shard set (experiment)", file=out)
        header = (
            f"{'case':<28}{'ops/s':>8}{'per proc':>9}{'p50 ms':>8}{'p99 ms':>8}{'srv µs':>8}"
            f"{'redis µs':>9}{'cli µs':>8}{'split':>10}{'other':>7}{'idle':>6}{'errors':>7}"
        )
        print(header, file=out)
        print("-" * len(header), file=out)
        data: dict[str, Any] = {"cases": {}, "ratios": {}}
        for case, measured in self.samples.items():
            samples = [m.sample for m in measured]
            rate = statistics.median(s.rate for s in samples)
            lat = sorted(x for s in samples for x in s.latencies_us)
            cpu = {
                r: statistics.median(s.cpu_us_per_op[r] for s in samples)
                for r in ("server", "redis", "client")
            }
            splits = [m.split for m in measured if m.split]
            split = (
                "/".join(f"{100 * statistics.median(col):.0f}" for col in zip(*splits, strict=True))
                if splits
                else "-"
            )
            row = {
                "ops_per_s": rate,
                "per_process": rate / case.procs if case.procs else rate,
                "p50_ms": bench._percentile(lat, 0.5),
                "p99_ms": bench._percentile(lat, 0.99),
                "cpu_us_per_op": cpu,
                "split_percent": split,
                "other_cores": max(s.other_cores for s in samples),
                "idle_cores": max(m.idle_cores for m in measured),
                "errors": sum(s.errors for s in samples),
                "rounds": [s.rate for s in samples],
            }
            data["cases"][case.name] = row

            def fmt(v: float, width: int) -> str:
                return f"{v:{width}.0f}" if v else f"{'-':>{width}}"

            print(
                f"{case.name:<28}{rate:8.0f}{row['per_process']:9.0f}{row['p50_ms']:8.1f}{row['p99_ms']:8.1f}"
                f"{fmt(cpu['server'], 8)}{fmt(cpu['redis'], 9)}{fmt(cpu['client'], 8)}{split:>10}"
                f"{row['other_cores']:7.2f}{row['idle_cores']:6.2f}{row['errors']:7d}",
                file=out,
            )
        if CLUSTER_SET in self.sets():
            print(
                f"cluster: a Redis Cluster of {self.args.cluster_primaries} primaries, "
                f"{DEFAULT_CLUSTER_GROUPS} partition groups (hash slots)",
                file=out,
            )
        shared = [s for s in self.services.values() if s.procs > 1]
        if shared:
            spread = ", ".join(f"{s.shards} shard(s): {'/'.join(map(str, s.connections))}" for s in shared)
            print(f"load-client connections per service process (SO_REUSEPORT): {spread}", file=out)
            data["connections"] = {f"{s.shards}x{s.procs}": s.connections for s in shared}
        if "scaling" in args.parts:
            self._shard_ratios(data, out)
        self._process_ratios(data, out)
        self._raw_ratios(data, out)
        self._cluster_ratios(data, out)
        busiest = max((m.sample.other_cores for ms in self.samples.values() for m in ms), default=0.0)
        if busiest > bench.OTHER_LOAD_WARNING_CORES:
            print(
                f"\nWARNING: other processes kept up to {busiest:.2f} cores busy during a case: absolute "
                "numbers are disturbed; the per-round ratios less so.",
                file=out,
            )
        return data

    def _shard_ratios(self, data: dict[str, Any], out: IO[str]) -> None:
        """Per-process ops/s with N shards ÷ with the fewest, against the target at the most."""
        args = self.args
        print(
            "\nper-process ops/s with N shards ÷ with 1 shard (same op, same processes; per-round ratios; "
            f"target for the most shards >= {SCALING_TARGET}); srv CPU = the service's µs/call with 1 "
            "shard ÷ with N (its capacity ratio, which other load disturbs less):",
            file=out,
        )
        base, most = min(args.shard_counts), max(args.shard_counts)
        for p in args.process_counts:
            for op in ("create", "touch"):
                reference = Case(op, base, p)
                for n in (n for n in args.shard_counts if n != base):
                    case = Case(op, n, p)
                    ratio, rounds = self.ratio(case, reference)
                    srv = _cpu_ratio(self.samples[reference], self.samples[case])
                    verdict = ""
                    if n == most:
                        met = "met" if ratio >= SCALING_TARGET else f"MISSED by {SCALING_TARGET - ratio:.2f}"
                        verdict = f"  target >= {SCALING_TARGET}: {met}"
                    text = ", ".join(f"{x:.2f}" for x in rounds)
                    print(
                        f"  {case.name + ' ÷ ' + str(base):<34} {ratio:5.2f}  (rounds: {text}; "
                        f"srv CPU {srv:.2f}){verdict}",
                        file=out,
                    )
                    data["ratios"][f"{case.name} / {reference.name}"] = {
                        "median": ratio,
                        "rounds": rounds,
                        "server_cpu": srv,
                    }

    def _process_ratios(self, data: dict[str, Any], out: IO[str]) -> None:
        """Total ops/s with the most processes ÷ with the fewest."""
        args = self.args
        if len(args.process_counts) < 2:
            return
        one, two = min(args.process_counts), max(args.process_counts)
        print(f"\ntotal ops/s with {two} processes ÷ with {one} (same shards; per-round ratios):", file=out)
        for n in self.sets():
            for op in ("create", "touch"):
                case, reference = Case(op, n, two), Case(op, n, one)
                ratio, rounds = self.ratio(case, reference, per_process=False)
                text = ", ".join(f"{x:.2f}" for x in rounds)
                print(f"  {case.name:<34} {ratio:5.2f}  (rounds: {text})", file=out)
                data["ratios"][f"{case.name} / {reference.name} (total)"] = {
                    "median": ratio,
                    "rounds": rounds,
                }

    def _raw_ratios(self, data: dict[str, Any], out: IO[str]) -> None:
        """Service ops/s ÷ raw-Redis ops/s of the same script on the same shards."""
        print("\nservice ops/s ÷ raw Redis ops/s (same op, same shards; per-round ratios):", file=out)
        for n in self.sets():
            for p in self.args.process_counts:
                for op in ("create", "touch"):
                    case = Case(op, n, p)
                    ratio, rounds = self.ratio(case, Case(op, n, 0), per_process=False)
                    text = ", ".join(f"{x:.2f}" for x in rounds)
                    print(f"  {case.name:<34} {ratio:5.2f}  (rounds: {text})", file=out)
                    data["ratios"][f"{case.name} / raw"] = {"median": ratio, "rounds": rounds}

    def _cluster_ratios(self, data: dict[str, Any], out: IO[str]) -> None:
        """Cluster-backend ops/s ÷ standalone ops/s with the same processes (most shards and 1 shard)."""
        standalone = [n for n in self.sets() if n != CLUSTER_SET]
        if CLUSTER_SET not in self.sets() or not standalone:
            return
        print(
            "\ncluster backend ops/s ÷ standalone shards ops/s (same op, same processes; per-round):",
            file=out,
        )
        for n in sorted({min(standalone), max(standalone)}):
            for p in self.args.process_counts:
                for op in ("create", "touch"):
                    case, reference = Case(op, CLUSTER_SET, p), Case(op, n, p)
                    ratio, rounds = self.ratio(case, reference, per_process=False)
                    text = ", ".join(f"{x:.2f}" for x in rounds)
                    print(
                        f"  {case.name + ' ÷ ' + str(n) + ' shard(s)':<40} {ratio:5.2f}  (rounds: {text})",
                        file=out,
                    )
                    data["ratios"][f"{case.name} / {reference.name}"] = {"median": ratio, "rounds": rounds}


def _cpu_ratio(reference: Sequence[Measured], case: Sequence[Measured]) -> float:
    """Median over rounds of the reference's service CPU per call ÷ the case's."""
    values = [
        r.sample.cpu_us_per_op["server"] / c.sample.cpu_us_per_op["server"]
        for r, c in zip(reference, case, strict=True)
        if c.sample.cpu_us_per_op["server"] > 0
    ]
    return statistics.median(values) if values else float("nan")


# -- part 3: the move -------------------------------------------------------------------------------


def _shard(name: str, url: str) -> Shard:
    """A shard as `session-store cluster` builds one (default Redis settings, no memory guard)."""
    return build_shards(RedisSettings(), [ShardSettings(name=name, url=url)], guard=False)[name]


def _retries(metrics_port: int) -> dict[str, float]:
    """`session_store_partition_retries_total` by reason, from the service's /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("session_store_partition_retries_total{"):
            labels, _, value = line.rpartition(" ")
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            found[reason] = float(value)
    return found


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def _seed_weighted(url: str, weight: int) -> None:
    """Store the first map on the source shard: it alone, with `weight`."""
    router = Router({"m0": _shard("m0", url)}, {"m0": weight}, refresh_seconds=0)
    try:
        await router.connect()
    finally:
        await router.close()


@dataclass
class MoveResult:
    """What the mover reports: its progress, the partitions the target owns, where its time went."""

    progress: MoveProgress
    moved: set[int]
    steps: dict[str, float]
    """Seconds spent between consecutive steps, by "previous step -> step" ("start", "end" at the ends)."""


async def _add_shard(source: str, target: str, args: argparse.Namespace) -> MoveResult:
    """The mover, as `session-store cluster add-shard --weight 1 --rate R` runs it (the source's weight
    given explicitly: a node computes a map of weight 1 for a configured shard)."""
    router = Router(
        {"m0": _shard("m0", source)}, {"m0": args.source_weight}, factory=_shard, refresh_seconds=0
    )
    events: list[tuple[float, str]] = [(time.perf_counter(), "start")]

    async def on_step(step: str, partition: int) -> None:
        events.append((time.perf_counter(), step))

    await router.connect()
    try:
        mover = Rebalancer(router, partitions_per_second=args.rate, on_step=on_step)
        progress = await mover.add_shard("m1", _shard("m1", target), weight=args.target_weight)
        events.append((time.perf_counter(), "end"))
        steps: dict[str, float] = {}
        for (t0, a), (t1, b) in itertools.pairwise(events):
            steps[f"{a} -> {b}"] = steps.get(f"{a} -> {b}", 0.0) + t1 - t0
        return MoveResult(progress, set(router.partition_map.partitions_of("m1")), steps)
    finally:
        await router.close()


async def _count(target: str) -> int:
    async with AsyncSessionStoreClient(target) as client:
        return await client.count_sessions(REALM)


async def _keys_by_shard(urls: Sequence[str]) -> list[int]:
    counts = []
    for url in urls:
        conn = aioredis.Redis.from_url(url)
        try:
            counts.append(int(await conn.dbsize()))
        finally:
            await conn.aclose()
    return counts


def _cpu_snapshot(roles: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each role's processes, of the whole machine, and the time."""
    snapshot = {role: bench._total_cpu(pids) for role, pids in roles.items()}
    snapshot["ours"] = sum(snapshot.values())
    snapshot["machine"] = bench._machine_busy_seconds()
    snapshot["wall"] = time.monotonic()
    return snapshot


def _cores(snapshots: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Cores each role kept busy before, during and after the move (other: processes not ours)."""
    cores: dict[str, dict[str, float]] = {}
    for phase, (a, b) in zip(("before", "during", "after"), itertools.pairwise(snapshots), strict=True):
        wall = max(b["wall"] - a["wall"], 1e-9)
        row = {k: (b[k] - a[k]) / wall for k in a if k not in ("ours", "machine", "wall")}
        row["other"] = max(0.0, ((b["machine"] - a["machine"]) - (b["ours"] - a["ours"])) / wall)
        cores[phase] = row
    return cores


def run_move(args: argparse.Namespace, rig: Rig, out: IO[str]) -> dict[str, Any]:
    """Fill the source shard, then add the target shard under load; report."""
    source, target = rig.start_shards("move", 2)
    asyncio.run(_seed_weighted(source.url, args.source_weight))
    metrics_port = free_port()
    service, children = rig.start_service(
        "move-service", f"m0={source.url}", 1, metrics=f"127.0.0.1:{metrics_port}"
    )
    rig.start_workers(args, service, f"m0={source.url}", repository=True)
    print(
        f"move: pids service {[c.pid for c in children]}, load clients {[w.pid for w in rig.workers]}, "
        f"redis {[source.pid, target.pid]}",
        flush=True,
    )
    shares = bench._split(args.sessions, len(rig.workers))
    began = time.monotonic()
    fills = rig.ask(
        [{"cmd": "fill", "count": n, "concurrency": FILL_CONCURRENCY} for n in shares],
        bench.ANSWER_TIMEOUT_SECONDS + FILL_SECONDS_PER_SESSION * args.sessions,
    )
    fill_seconds = time.monotonic() - began
    filled, fill_errors = sum(f["created"] for f in fills), sum(f["errors"] for f in fills)
    print(
        f"move: {filled} sessions created in {fill_seconds:.1f} s ({filled / fill_seconds:.0f}/s), "
        f"{fill_errors} errors",
        flush=True,
    )
    keys_before = asyncio.run(_keys_by_shard([source.url, target.url]))
    start_at = time.monotonic() + 0.3
    per_client_rate = [args.load_rate / len(rig.workers)] * len(rig.workers)
    per_client_concurrency = bench._split(args.load_concurrency, len(rig.workers))
    max_seconds = 2 * args.phase + MOVE_TIMEOUT_SECONDS
    for worker, rate, concurrency in zip(rig.workers, per_client_rate, per_client_concurrency, strict=True):
        worker.send(
            {
                "cmd": "timeline",
                "rate": rate,
                "concurrency": concurrency,
                "start_at": start_at,
                "max_seconds": max_seconds,
            }
        )
    roles = {
        "service": [c.pid for c in children],
        "redis source": [source.pid],
        "redis target": [target.pid],
        "load clients": [w.pid for w in rig.workers],
        "mover": [os.getpid()],
    }
    time.sleep(max(0.0, start_at - time.monotonic()))
    snapshots = [_cpu_snapshot(roles)]
    time.sleep(max(0.0, start_at + args.phase - time.monotonic()))
    retries_before = _retries(metrics_port)
    snapshots.append(_cpu_snapshot(roles))
    move_start = time.monotonic()
    try:
        result = asyncio.run(asyncio.wait_for(_add_shard(source.url, target.url, args), MOVE_TIMEOUT_SECONDS))
    finally:
        move_end = time.monotonic()
        snapshots.append(_cpu_snapshot(roles))
        time.sleep(args.phase)
        snapshots.append(_cpu_snapshot(roles))
        for worker in rig.workers:
            worker.send({"cmd": "stop"})
    answers = [w.receive(bench.ANSWER_TIMEOUT_SECONDS + max_seconds) for w in rig.workers]
    time.sleep(1.5)  # the service's 1 s map refresh and metrics settle
    retries_after = _retries(metrics_port)
    counted = asyncio.run(_count(service))
    keys_after = asyncio.run(_keys_by_shard([source.url, target.url]))
    created = sum(a["created"] for a in answers)
    return _report_move(
        args,
        out,
        result=result,
        move=(move_start - start_at, move_end - start_at),
        cores=_cores(snapshots),
        answers=answers,
        fill={"sessions": filled, "seconds": fill_seconds, "errors": fill_errors},
        retries={k: retries_after.get(k, 0.0) - retries_before.get(k, 0.0) for k in ("moved", "frozen")},
        counts={"expected": filled + created, "counted": counted},
        keys_by_shard={"before": keys_before, "after": keys_after},
    )


def _latencies(
    answers: list[dict[str, Any]], window_ms: tuple[float, float], moved: set[int]
) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]], dict[int, list[float]]]:
    """The load's latencies (ms) by phase (and, during the move, by whether the call's partition was
    one of the moved ones), by operation before and during, and by second of the run."""
    start_ms, end_ms = window_ms
    phases: dict[str, list[float]] = {k: [] for k in ("before", "during", "after", "moved", "other")}
    by_op: dict[str, dict[str, list[float]]] = {op: {"before": [], "during": []} for op in OP_NAMES}
    per_second: dict[int, list[float]] = {}
    for a in answers:
        for began, latency_us, op, p in zip(
            a["began_ms"], a["latency_us"], a["ops"], a["partitions"], strict=True
        ):
            latency = latency_us / 1000
            phase = "before" if began < start_ms else "during" if began <= end_ms else "after"
            phases[phase].append(latency)
            if phase == "during":
                phases["moved" if p in moved else "other"].append(latency)
            if phase in by_op[OP_NAMES[op]]:
                by_op[OP_NAMES[op]][phase].append(latency)
            per_second.setdefault(int(began // 1000), []).append(latency)
    return phases, by_op, per_second


def _report_move(
    args: argparse.Namespace,
    out: IO[str],
    *,
    result: MoveResult,
    move: tuple[float, float],
    cores: dict[str, dict[str, float]],
    answers: list[dict[str, Any]],
    fill: dict[str, Any],
    retries: dict[str, float],
    counts: dict[str, int],
    keys_by_shard: dict[str, list[int]],
) -> dict[str, Any]:
    progress, moved = result.progress, result.moved
    start_ms, end_ms = move[0] * 1000, move[1] * 1000
    duration = move[1] - move[0]
    phases, by_op, per_second = _latencies(answers, (start_ms, end_ms), moved)
    errors = [e for a in answers for e in a["errors"]]
    error_kinds = sorted({f"{OP_NAMES[op]}:{kind}" for _, op, kind in errors})
    errors_during = sum(1 for began, _, _ in errors if start_ms <= began <= end_ms)
    pauses = progress.pauses_ms
    p50, p99, worst = _pct(pauses, 0.5), _pct(pauses, 0.99), max(pauses, default=0.0)
    summary = progress.summary()
    load = "closed loop" if args.load_rate <= 0 else f"paced at {args.load_rate:.0f} calls/s"
    print(
        f"\nmove: {fill['sessions']} sessions on one shard of weight {args.source_weight} (created in "
        f"{fill['seconds']:.1f} s, {fill['sessions'] / fill['seconds']:.0f}/s through SessionRepository, "
        f"{fill['errors']} errors); add a shard of weight {args.target_weight} at --rate {args.rate:g} "
        f"partitions/s; load: creates, touches and gets in turn through AsyncSessionStoreClient, {load}, "
        f"at most {args.load_concurrency} in flight, {args.phase:g} s before and after the move.",
        file=out,
    )
    rows = [
        ("partitions moved", f"{progress.moved} of {PARTITION_COUNT} (plan {progress.total})"),
        ("move duration", f"{duration:.2f} s (mover CPU {cores['during']['mover'] * duration:.2f} s)"),
        (
            "keys copied",
            f"{progress.keys_copied} ({progress.keys_copied / duration:.0f} keys/s over the move)",
        ),
        ("keys per shard before/after", f"{keys_by_shard['before']} -> {keys_by_shard['after']}"),
        (
            "pause per partition",
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms (summary p99 "
            f"{summary['pause_p99_ms']} ms); target p99 < {PAUSE_P99_TARGET_MS:.0f} ms: "
            + ("met" if p99 < PAUSE_P99_TARGET_MS else "MISSED"),
        ),
        (
            "client-visible errors",
            f"{len(errors)} in all, {errors_during} during the move {error_kinds or ''} (target 0: "
            + ("met)" if not errors else "MISSED)"),
        ),
        ("service retries during move", f"moved {retries['moved']:.0f}, frozen {retries['frozen']:.0f}"),
        (
            "sessions counted after",
            f"{counts['counted']} of {counts['expected']} expected (filled + created by the load)"
            + ("" if counts["counted"] == counts["expected"] else "  MISMATCH"),
        ),
    ]
    for name, value in rows:
        print(f"  {name:<30} {value}", file=out)
    header = f"  {'load latency':<30}{'calls':>8}{'calls/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
    print(header, file=out)
    spans = {"before": args.phase, "during": duration, "after": args.phase, "moved": duration}
    spans["other"] = duration
    labels = {"moved": "during, moved partitions", "other": "during, other partitions"}
    data_phases = {}
    for phase, values in phases.items():
        rate = len(values) / spans[phase] if spans[phase] > 0 else 0.0
        row = {"p50_ms": _pct(values, 0.5), "p99_ms": _pct(values, 0.99), "max_ms": max(values, default=0.0)}
        data_phases[phase] = {"calls": len(values), "calls_per_s": rate, **row}
        print(
            f"  {labels.get(phase, phase):<30}{len(values):8d}{rate:9.0f}"
            f"{row['p50_ms']:8.1f}{row['p99_ms']:8.1f}{row['max_ms']:8.1f}",
            file=out,
        )
    for op, spans_by_phase in by_op.items():
        before, during = spans_by_phase["before"], spans_by_phase["during"]
        print(
            f"  {op + ' p50/p99 before -> during':<30}{_pct(before, 0.5):8.1f}/{_pct(before, 0.99):.1f}"
            f" -> {_pct(during, 0.5):.1f}/{_pct(during, 0.99):.1f} ms",
            file=out,
        )
    spent = ", ".join(f"{k} {v:.2f}" for k, v in sorted(result.steps.items(), key=lambda kv: -kv[1]))
    print(f"  {'mover time by step (s)':<30} {spent}", file=out)
    names = list(cores["before"])
    print(f"  {'cores busy':<30}" + "".join(f"{n:>14}" for n in names), file=out)
    for phase, row in cores.items():
        print(f"  {phase:<30}" + "".join(f"{row[n]:14.2f}" for n in names), file=out)
    return {
        "cores": cores,
        "mover_steps_s": result.steps,
        "summary": summary,
        "duration_s": duration,
        "pauses_ms": {"p50": p50, "p99": p99, "max": worst},
        "errors": len(errors),
        "errors_during": errors_during,
        "error_kinds": error_kinds,
        "retries": retries,
        "counts": counts,
        "phases": data_phases,
        "per_second": [
            {"second": sec, "calls": len(v), "p50_ms": _pct(v, 0.5), "p99_ms": _pct(v, 0.99)}
            for sec, v in sorted(per_second.items())
        ],
        "move_window_s": [move[0], move[1]],
        "fill": fill,
        "rate": args.rate,
        "load_rate": args.load_rate,
    }


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(x) for x in text.split(",") if x.strip()}))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("_worker", help=argparse.SUPPRESS)
    worker.add_argument("--service", required=True)
    worker.add_argument("--shards", default="")
    worker.add_argument("--channels", type=int, default=DEFAULT_CHANNELS)
    worker.add_argument("--index", type=int, default=0)
    worker.add_argument("--repository", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, 20 000 sessions, 2 s phases")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument("--shards", default=",".join(map(str, DEFAULT_SHARD_COUNTS)), help="shard counts")
    parser.add_argument(
        "--cluster-primaries",
        type=int,
        default=DEFAULT_CLUSTER_PRIMARIES,
        help="primaries of the cluster part",
    )
    parser.add_argument(
        "--processes", default=",".join(map(str, DEFAULT_PROCESS_COUNTS)), help="service processes"
    )
    parser.add_argument("--seconds", type=float, default=None, help=f"per case per round ({DEFAULT_SECONDS})")
    parser.add_argument("--rounds", type=int, default=None, help=f"({DEFAULT_ROUNDS})")
    parser.add_argument(
        "--warmup", type=float, default=None, help=f"seconds per case, once ({DEFAULT_WARMUP_SECONDS})"
    )
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="calls in flight in total"
    )
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="load-client processes")
    parser.add_argument(
        "--channels", type=int, default=DEFAULT_CHANNELS, help="gRPC channels per load client"
    )
    parser.add_argument(
        "--redis-connections",
        type=int,
        default=0,
        help="SESSION_STORE_REDIS_CONNECTIONS of the scaling services (0: the service's default)",
    )
    parser.add_argument(
        "--same-connections",
        type=int,
        default=0,
        help="experiment: give each scaling service this many Redis connections in all, split over its "
        "shards (1 shard x N, 4 shards x N/4), so shard counts differ in routing only",
    )
    parser.add_argument(
        "--one-server",
        action="store_true",
        help="experiment: the shards of each set are databases 0..N-1 of one redis-server",
    )
    parser.add_argument(
        "--sessions", type=int, default=None, help=f"stored before the move ({DEFAULT_SESSIONS})"
    )
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_PARTITIONS_PER_SECOND, help="partitions moved per second"
    )
    parser.add_argument("--source-weight", type=int, default=DEFAULT_SOURCE_WEIGHT)
    parser.add_argument("--target-weight", type=int, default=DEFAULT_TARGET_WEIGHT)
    parser.add_argument(
        "--load-rate", type=float, default=DEFAULT_LOAD_RATE, help="calls/s during the move; 0 = closed loop"
    )
    parser.add_argument("--load-concurrency", type=int, default=DEFAULT_LOAD_CONCURRENCY)
    parser.add_argument(
        "--phase",
        type=float,
        default=None,
        help=f"load seconds before and after the move ({DEFAULT_PHASE_SECONDS})",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="bound of the whole run, s"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.command is not None:
        return args
    quick = args.quick
    args.seconds = args.seconds if args.seconds is not None else (1.0 if quick else DEFAULT_SECONDS)
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else DEFAULT_ROUNDS)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if quick else DEFAULT_WARMUP_SECONDS)
    args.sessions = args.sessions if args.sessions is not None else (20_000 if quick else DEFAULT_SESSIONS)
    args.phase = args.phase if args.phase is not None else (2.0 if quick else DEFAULT_PHASE_SECONDS)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.shard_counts, args.process_counts = _ints(args.shards), _ints(args.processes)
    limits = {
        "--parts": bool(args.parts) and set(args.parts) <= set(PARTS),
        "--shards": bool(args.shard_counts) and all(1 <= n <= 8 for n in args.shard_counts),
        "--cluster-primaries": 1 <= args.cluster_primaries <= 8,
        "--processes": bool(args.process_counts) and all(1 <= n <= 4 for n in args.process_counts),
        "--seconds": 0 < args.seconds <= 60,
        "--rounds": 1 <= args.rounds <= 20,
        "--warmup": 0 <= args.warmup <= 30,
        "--concurrency": args.clients <= args.concurrency <= 4096,
        "--clients": 1 <= args.clients <= 16,
        "--channels": 1 <= args.channels <= 64,
        "--redis-connections": 0 <= args.redis_connections <= 64,
        "--same-connections": 0 <= args.same_connections <= 64,
        "--sessions": 1000 <= args.sessions <= 1_000_000,
        "--rate": 0 < args.rate <= 100_000,
        "--source-weight": 1 <= args.source_weight <= 1000,
        "--target-weight": 1 <= args.target_weight <= 1000,
        "--load-rate": 0 <= args.load_rate <= 100_000,
        "--load-concurrency": args.clients <= args.load_concurrency <= 4096,
        "--phase": 0 < args.phase <= 60,
        "--timeout": 10 <= args.timeout <= 7200,
    }
    for name, ok in limits.items():
        if not ok:
            parser.error(f"{name} is out of range")
    return args


def _on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or one of its own child processes); returns the exit code."""
    args = _parse(argv)
    if args.command == "_worker":
        asyncio.run(_worker_main(args))
        return 0
    configure_logging("warning", json=False)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)  # --timeout: everything started is still stopped
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.alarm(int(args.timeout))
    tmp = Path(tempfile.mkdtemp(prefix="session-store-bench-cluster-"))
    out = sys.stdout
    data: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
    print(
        f"{data['started']} machine: nproc={os.cpu_count()} python={platform.python_version()} "
        f"grpcio={grpc.__version__} redis-server={bench._redis_version()} redis-py={redis.__version__}; "
        f"code {bench._code_version()}",
        file=out,
        flush=True,
    )
    try:
        if "scaling" in args.parts or "cluster" in args.parts:
            rig = Rig(tmp / "scaling")
            rig.tmp.mkdir()
            try:
                scaling = Scaling(args, rig)
                scaling.start()
                scaling.run()
            finally:
                rig.stop()
            data["scaling"] = scaling.report(out)
        if "move" in args.parts:
            rig = Rig(tmp / "move")
            rig.tmp.mkdir()
            try:
                data["move"] = run_move(args, rig, out)
            finally:
                rig.stop()
        if args.json:
            data["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            args.json.write_text(json.dumps(data, indent=2) + "\n")
    except KeyboardInterrupt:
        print("interrupted: every started process was stopped", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
