"""Throughput and latency of session-store against its references, measured in one interleaved run.

The job: start three local redis-server shards, the service (`python -m session_store serve`) and a
bare grpc.aio echo server, each in its own process, plus a few load-client processes; then run every
case for a few seconds per round, round after round, so that the VM's speed drift hits all cases
alike; print ops/s, latency percentiles, CPU per operation of every process, and the service/echo
ratios against the targets. Everything binds 127.0.0.1 and every process started is stopped by PID.

Cases:
    echo          bare grpc.aio echo server, bytes in/out, payload sizes of a real create call.
    echo-redis    the same echo server, but each call first runs the create script via redis.asyncio
                  (pools as the service's): the floor of any grpc.aio + redis.asyncio service.
    redis         EVALSHA of the create script via redis.asyncio from the load clients (no gRPC).
    redis-bench   redis-benchmark EVALSHA of the create script (only with redis-benchmark on PATH),
                  one connection per in-flight call, unpipelined and pipelined by 16.
    create, get, touch
                  the service through AsyncSessionStoreClient (protobuf in, dataclasses out).
    code-exchange the authorization-code exchange as Keycloak runs it against the store:
                  TakeSingleUseObject of a code each call. Codes are put (60 s lifespan, notes sid and
                  client) by the load clients before each timed run, outside its time and CPU
                  accounting, in a bounded pool sized from the rates measured so far (a run in which
                  a pool ran out is run again with larger pools).
    refresh-rotation
                  UseRefreshToken with the realm's revoke_refresh_token on and max reuse 0: every call
                  presents the next token of its chain (rt-1, rt-2, ...; issued_at = the previous
                  call's new_issued_at), on many sessions (one chain each) spread over the partitions;
                  a chain is never in two calls at once, and every call must succeed with use count 1.
    create-raw, get-raw, touch-raw
                  the same RPCs with pre-serialized requests and undecoded replies: the load client
                  does exactly the work it does for `echo`, so these ratios compare the servers.
    repo-create, repo-touch
                  SessionRepository called in the load-client processes (no gRPC): the same storage
                  code the service runs, so their client CPU per call is the storage layer's cost.

Usage:
    .venv/bin/python scripts/bench.py [--seconds 2] [--rounds 3] [--concurrency 64]
        [--clients 2] [--channels 2] [--cases echo,create,...] [--json out.json]

The other sub-commands (`_worker`, `_echo`) are the processes this script starts for itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import math
import os
import platform
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import redis
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2

from session_store import AsyncSessionStoreClient, RealmPolicy, SessionStoreError
from session_store.embedded import EmbeddedShards, RedisProcess, free_port
from session_store.logging import configure_logging
from session_store.model.clock import SystemClock
from session_store.model.ids import mint_session_id, user_partition
from session_store.model.placement import place_partitions
from session_store.model.policy import effective_policy
from session_store.model.session import NewUserSession
from session_store.storage import keys
from session_store.storage._scripts import load_scripts
from session_store.storage.policies import PolicyStore, policy_args
from session_store.storage.router import Router
from session_store.storage.sessions import SessionRepository
from session_store.storage.shard import Shard
from session_store.v1 import session_store_pb2 as pb

REALM = "bench-realm"
CLIENT_ID = "account-console"
REDIRECT_URI = "https://app.example.com/realms/cb/callback"
ECHO_SERVICE = "bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
SERVICE = pb.DESCRIPTOR.services_by_name["SessionStore"].full_name
USER_POOL = 20_000
"""Distinct users the create cases draw from (a few sessions per user, as after repeated logins)."""
CREATE_NOTES = {
    "AUTH_TIME": "1700000000",
    "KC_DEVICE_NOTE": "eyJpcEFkZHJlc3Mi",
    "auth_type": "code",
    "level_of_authentication": "1",
}
SESSIONS_PER_CLIENT = 400
"""Sessions each load client creates (each with one client session) for the get and touch cases."""

DEFAULT_SECONDS = 2.0
DEFAULT_ROUNDS = 3
DEFAULT_CONCURRENCY = 64
DEFAULT_CLIENTS = 2
DEFAULT_CHANNELS = 2
DEFAULT_WARMUP_SECONDS = 0.5
TARGETS = {"create": 0.6, "touch": 0.7, "code-exchange": 0.6, "refresh-rotation": 0.6}
"""Issue targets: service ops/s divided by echo ops/s measured in the same run."""
P99_TARGET_MS = 20.0
OTHER_LOAD_WARNING_CORES = 0.2
SERVICE_CASES = ("create", "get", "touch")
FLOW_CASES = ("code-exchange", "refresh-rotation")
"""Keycloak's token-endpoint calls on the store, through AsyncSessionStoreClient."""
RAW_CASES = ("create-raw", "get-raw", "touch-raw")
REPO_CASES = ("repo-create", "repo-touch")
ECHO_CASES = ("echo", "echo-redis")
ALL_CASES = (
    "echo",
    "echo-redis",
    "redis",
    "redis-bench",
    *SERVICE_CASES,
    *FLOW_CASES,
    *RAW_CASES,
    *REPO_CASES,
)
REDIS_BENCH_PIPELINE = 16
REDIS_BENCH_DB = 15
REDIS_BENCH_GUESS_PER_SECOND = 30_000
REDIS_BENCH_ATTEMPTS = 3
STOP_TIMEOUT_SECONDS = 10.0
CALL_TIMEOUT_SECONDS = 5.0
"""Deadline of every benchmark call (as the client's default): a stalled server cannot hang a run."""
ANSWER_TIMEOUT_SECONDS = 60.0
CODE_LIFESPAN_SECONDS = 60
"""Lifespan of a pre-created code (Keycloak's default access-code lifespan), unless a run is longer."""
CODE_LIFESPAN_SLACK_SECONDS = 15
"""A code must have this much lifespan left beyond the timed run, or it is not used (nor counted)."""
CODE_RATE_GUESS = 5000.0
"""code-exchange calls/s (all load clients) the pools are sized for at least (a cold warm-up run
understates the rate); codes left over from one run are taken in the next while young enough."""
CODE_POOL_MARGIN = 1.5
"""Codes a load client gets per call that the fastest load client's highest rate so far would make."""
CODE_POOL_ATTEMPTS = 3
"""Runs of code-exchange in one round before a run whose pool ran out is kept (and flagged)."""
CODE_POOL_MAX_PER_CLIENT = 100_000
"""Most codes a load client holds: the pool (and Redis's memory for it) is bounded."""
CODE_FILL_CONCURRENCY = 64
CODES_PER_SECOND_FLOOR = 500
"""Slowest put rate allowed for in the fill's answer timeout."""
ROTATION_CHAINS_PER_CLIENT = 512
"""Sessions (one refresh-token chain each) a load client rotates; at least twice its calls in flight."""


# --------------------------------------------------------------------------------------------------
# Payloads shared by the coordinator and the load clients
# --------------------------------------------------------------------------------------------------


def create_fields(user_id: str, n: int) -> dict[str, Any]:
    """The keyword arguments of one realistic create call (about 212 bytes on the wire)."""
    return {
        "login_username": f"user-{n % 1_000_000:06d}@example.com",
        "ip_address": f"10.{n % 250}.{(n // 250) % 250}.{n % 200 + 1}",
        "auth_method": "openid-connect",
        "notes": CREATE_NOTES,
    }


def create_request(user_id: str, n: int) -> pb.CreateUserSessionRequest:
    """The same create call as a protobuf request."""
    return pb.CreateUserSessionRequest(realm=REALM, user_id=user_id, **create_fields(user_id, n))


def create_script_call(shard_names: Sequence[str], user_id: str, n: int) -> tuple[str, list[str], list[str]]:
    """(shard name, KEYS, ARGV) of the create script, built as SessionRepository builds them."""
    partition = user_partition(REALM, user_id)
    sid = mint_session_id(partition)
    fields = create_fields(user_id, n)
    args = [
        "",
        *_POLICY_ARGS,
        sid,
        REALM,
        user_id,
        fields["login_username"],
        fields["ip_address"],
        fields["auth_method"],
        "0",
        "",
        "",
        "0",
        *NO_LIMITS,
        str(len(CREATE_NOTES)),
    ]
    for name, value in CREATE_NOTES.items():
        args += [name, value]
    script_keys = [
        keys.session(partition, sid, offline=False),
        keys.user_index(partition, REALM, user_id, offline=False),
        keys.realm_index(partition, REALM, offline=False),
        keys.client_index(partition, REALM, offline=False),
        *keys.event_keys(partition),
        *keys.GUARD_KEYS,  # the ownership guard's, appended as Shard.call appends them
    ]
    return _owner(shard_names, partition), script_keys, args


_POLICY_ARGS = policy_args(effective_policy(RealmPolicy(realm=REALM)))
NO_LIMITS = ("0", "0", "", "0")
"""The create script's session-limit ARGV when no limit applies (realm, client, client id, behaviour)."""
_OWNERS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _owner(shard_names: Sequence[str], partition: int) -> str:
    names = tuple(shard_names)
    owners = _OWNERS.get(names)
    if owners is None:
        owners = _OWNERS[names] = tuple(place_partitions(dict.fromkeys(names, 1)).owners)
    return owners[partition]


# --------------------------------------------------------------------------------------------------
# The echo server process
# --------------------------------------------------------------------------------------------------


def _redis_pool(url: str) -> aioredis.Redis:
    """A redis.asyncio client configured as storage/shard.py configures the service's."""
    return aioredis.Redis.from_url(
        url,
        max_connections=DEFAULT_CONCURRENCY,
        decode_responses=True,
        health_check_interval=0,
        socket_timeout=CALL_TIMEOUT_SECONDS,
    )


async def _echo_main(port: int, reply_bytes: int, shard_urls: dict[str, str]) -> None:
    """Serve the echo method; with shards, each call first runs the create script (echo-redis)."""
    reply = b"x" * reply_bytes
    pools = {name: _redis_pool(url) for name, url in shard_urls.items()}
    names = list(pools)
    sha = load_scripts()["create_user_session"].sha
    rng = random.Random(0)
    users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(USER_POOL)]
    counter = 0

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        nonlocal counter
        if pools:
            counter += 1
            shard, script_keys, args = create_script_call(names, users[counter % len(users)], counter)
            await pools[shard].evalsha(sha, len(script_keys), *script_keys, *args)
        return reply

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"port": bound}), flush=True)
    await stop.wait()
    await server.stop(0)
    for pool in pools.values():
        await pool.aclose()


# --------------------------------------------------------------------------------------------------
# The load-client process: reads one JSON command per line, answers one JSON line
# --------------------------------------------------------------------------------------------------


class CheckFailedError(Exception):
    """A call succeeded but did not answer what the case expects (counted as an error)."""


class PoolExhaustedError(Exception):
    """The load client has no pre-created code left: its slots stop, and the run is done again."""


@dataclass
class Chain:
    """One refresh-token chain on its own user session: the tokens rt-1, rt-2, ... in turn."""

    session_id: str
    reuse_id: str
    first_issued_at: int
    """iat of rt-1: one second after the later of the user and client session starts."""
    used: int = 0
    """Tokens of the chain presented so far (whatever their outcome: the next call takes the next)."""


def _bytes_method(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A unary method that sends and returns raw bytes (no serializer on either side)."""
    return channel.unary_unary(method)


@dataclass
class Worker:
    """One load-client process: its channels, clients and prepared requests."""

    service: str
    shard_urls: dict[str, str]
    channels: int
    index: int
    clients: list[AsyncSessionStoreClient] = field(default_factory=list)
    raw_channels: dict[str, list[grpc.aio.Channel]] = field(default_factory=dict)
    redis_clients: dict[str, aioredis.Redis] = field(default_factory=dict)
    router: Router | None = None
    repository: SessionRepository | None = None
    session_ids: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    counter: int = 0
    codes: deque[tuple[float, str]] = field(default_factory=deque)
    """Pre-created codes not taken yet: (monotonic time of the put, key), oldest first."""
    chains: deque[Chain] = field(default_factory=deque)
    """Refresh-token chains not in a call right now."""

    def channel_options(self) -> list[tuple[str, Any]]:
        """A subchannel pool per channel, so that every channel is its own TCP connection."""
        return [("grpc.use_local_subchannel_pool", 1)]

    async def start(self) -> None:
        """Open the service clients and the Redis pools."""
        self.clients = [
            AsyncSessionStoreClient(self.service, channel_options=self.channel_options())
            for _ in range(self.channels)
        ]
        self.redis_clients = {name: _redis_pool(url) for name, url in self.shard_urls.items()}
        # The service's own storage stack, configured as SessionStoreServer configures it.
        self.router = Router({name: Shard(name, url) for name, url in self.shard_urls.items()})
        await self.router.connect()
        self.repository = SessionRepository(self.router, PolicyStore(self.router), SystemClock())
        rng = random.Random(self.index)
        self.users = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(USER_POOL)]

    def raw(self, target: str) -> list[grpc.aio.Channel]:
        """Channels to `target` for bytes-in/bytes-out calls, opened once."""
        if target not in self.raw_channels:
            self.raw_channels[target] = [
                grpc.aio.insecure_channel(target, options=self.channel_options())
                for _ in range(self.channels)
            ]
        return self.raw_channels[target]

    def next_user(self) -> tuple[str, int]:
        """A user from the pool and a running number for the other fields."""
        self.counter += 1
        return self.users[self.counter % len(self.users)], self.counter

    async def prepare(self, sessions: int, chains: int = 0) -> dict[str, Any]:
        """Create `sessions` sessions with one client session each, and `chains` more for the
        refresh-rotation case (the first load client also turns rotation on in the realm's policy);
        measure the create sizes.
        """
        store = self.clients[0]
        sem = asyncio.Semaphore(32)
        if chains and self.index == 0:
            await store.set_realm_policy(
                RealmPolicy(realm=REALM, revoke_refresh_token=True, refresh_token_max_reuse=0)
            )

        async def chain(n: int) -> Chain:
            async with sem:
                user, m = self.next_user()
                session = await store.create_user_session(REALM, user, **create_fields(user, m))
                attached = await store.attach_client_session(
                    REALM, session.id, CLIENT_ID, redirect_uri=REDIRECT_URI, protocol="openid-connect"
                )
                # use_refresh_token.lua: a token issued before the session or the client session
                # started (beyond one second) is stale; one second after both is never.
                first = max(session.started, attached.started) + 1
                return Chain(session.id, f"bench-{self.index}-{n}", first)

        self.chains = deque(await asyncio.gather(*(chain(n) for n in range(chains))))

        async def one() -> str:
            async with sem:
                user, n = self.next_user()
                session = await store.create_user_session(REALM, user, **create_fields(user, n))
                await store.attach_client_session(
                    REALM,
                    session.id,
                    CLIENT_ID,
                    redirect_uri=REDIRECT_URI,
                    protocol="openid-connect",
                    notes={"scope": "openid profile", "iss": "https://idp.example.com/realms/x"},
                )
                return session.id

        self.session_ids = list(await asyncio.gather(*(one() for _ in range(sessions))))
        user, n = self.next_user()
        request = create_request(user, n).SerializeToString()
        channel = self.raw(self.service)[0]
        reply = await _bytes_method(channel, f"/{SERVICE}/CreateUserSession")(request)
        get_reply = await _bytes_method(channel, f"/{SERVICE}/GetUserSession")(
            pb.GetUserSessionRequest(realm=REALM, session_id=self.session_ids[0]).SerializeToString()
        )
        return {"request_bytes": len(request), "reply_bytes": len(reply), "get_reply_bytes": len(get_reply)}

    async def fill_codes(self, codes: int, lifespan: int, max_age: float) -> dict[str, Any]:
        """Have `codes` codes in the pool: drop those put more than `max_age` s ago (Redis expires
        them), put new ones as Keycloak puts a code (notes: the user session and the client).
        """
        now = time.monotonic()
        while self.codes and now - self.codes[0][0] > max_age:
            self.codes.popleft()
        missing = max(0, codes - len(self.codes))
        sem = asyncio.Semaphore(CODE_FILL_CONCURRENCY)
        clients, sids = self.clients, self.session_ids

        async def put(n: int) -> tuple[float, str]:
            async with sem:
                key = str(uuid.uuid4())
                notes = {"sid": sids[n % len(sids)], "client": CLIENT_ID}
                await clients[n % len(clients)].put_single_use_object(REALM, key, lifespan, notes=notes)
                return time.monotonic(), key

        self.codes.extend(await asyncio.gather(*(put(n) for n in range(missing))))
        return {"codes": len(self.codes), "created": missing}

    def operation(self, case: str, target: str, payload_bytes: int) -> Callable[[int], Awaitable[object]]:
        """The coroutine function one in-flight slot calls repeatedly; its argument is the slot."""
        if case in ECHO_CASES:
            payload = b"x" * payload_bytes
            echo_calls = [_bytes_method(ch, ECHO_METHOD) for ch in self.raw(target)]
            return lambda slot: echo_calls[slot % len(echo_calls)](payload, timeout=CALL_TIMEOUT_SECONDS)
        if case == "redis":
            return self._redis_create()
        if case in SERVICE_CASES:
            return self._api(case)
        if case in FLOW_CASES:
            return self._code_exchange() if case == "code-exchange" else self._refresh_rotation()
        if case in RAW_CASES:
            return self._raw(case.removesuffix("-raw"))
        if case in REPO_CASES:
            return self._repo(case.removeprefix("repo-"))
        raise ValueError(f"unknown case {case}")

    def _redis_create(self) -> Callable[[int], Awaitable[object]]:
        sha = load_scripts()["create_user_session"].sha
        names = list(self.redis_clients)

        async def call(slot: int) -> object:
            user, n = self.next_user()
            shard, script_keys, args = create_script_call(names, user, n)
            return await self.redis_clients[shard].evalsha(sha, len(script_keys), *script_keys, *args)

        return call

    def _api(self, case: str) -> Callable[[int], Awaitable[object]]:
        clients, ids = self.clients, self.session_ids

        async def create(slot: int) -> object:
            user, n = self.next_user()
            return await clients[slot % len(clients)].create_user_session(
                REALM, user, **create_fields(user, n)
            )

        async def get(slot: int) -> object:
            self.counter += 1
            return await clients[slot % len(clients)].get_user_session(REALM, ids[self.counter % len(ids)])

        async def touch(slot: int) -> object:
            self.counter += 1
            return await clients[slot % len(clients)].touch_user_session(
                REALM, ids[self.counter % len(ids)], client_ids=[CLIENT_ID]
            )

        return {"create": create, "get": get, "touch": touch}[case]

    def _code_exchange(self) -> Callable[[int], Awaitable[object]]:
        clients, codes = self.clients, self.codes

        async def take(slot: int) -> object:
            if not codes:
                raise PoolExhaustedError
            _, key = codes.popleft()
            code = await clients[slot % len(clients)].take_single_use_object(REALM, key)
            if code.notes.get("client") != CLIENT_ID:
                raise CheckFailedError("code-exchange: the code's notes are not the ones put")
            return code

        return take

    def _refresh_rotation(self) -> Callable[[int], Awaitable[object]]:
        clients, free = self.clients, self.chains
        if not free:
            raise ValueError("refresh-rotation: no chains were prepared")

        async def refresh(slot: int) -> object:
            # A chain is out of `free` while its call runs: no two calls race on one chain (a newer
            # token landing first would make the older one stale and detach the client session).
            chain = free.popleft()
            chain.used += 1
            issued_at = chain.first_issued_at + chain.used - 1
            try:
                use = await clients[slot % len(clients)].use_refresh_token(
                    REALM,
                    chain.session_id,
                    CLIENT_ID,
                    f"rt-{chain.used}",
                    issued_at=issued_at,
                    reuse_id=chain.reuse_id,
                    new_issued_at=issued_at + 1,
                )
            finally:
                free.append(chain)
            if use.use_count != 1:
                raise CheckFailedError(f"refresh-rotation: use count {use.use_count}, not 1")
            return use

        return refresh

    def _repo(self, verb: str) -> Callable[[int], Awaitable[object]]:
        repository, ids = self.repository, self.session_ids
        assert repository is not None  # noqa: S101 - set in start()

        async def create(slot: int) -> object:
            user, n = self.next_user()
            new = NewUserSession(realm=REALM, user_id=user, **create_fields(user, n))
            return await repository.create_user_session(new)

        async def touch(slot: int) -> object:
            self.counter += 1
            return await repository.touch_user_session(
                REALM, ids[self.counter % len(ids)], offline=False, client_ids=[CLIENT_ID]
            )

        return {"create": create, "touch": touch}[verb]

    def _raw(self, verb: str) -> Callable[[int], Awaitable[object]]:
        method = {"create": "CreateUserSession", "get": "GetUserSession", "touch": "TouchUserSession"}[verb]
        calls = [_bytes_method(ch, f"/{SERVICE}/{method}") for ch in self.raw(self.service)]
        requests: list[bytes]
        if verb == "create":
            requests = [create_request(u, n).SerializeToString() for n, u in enumerate(self.users)]
        elif verb == "get":
            requests = [
                pb.GetUserSessionRequest(realm=REALM, session_id=s).SerializeToString()
                for s in self.session_ids
            ]
        else:
            requests = [
                pb.TouchUserSessionRequest(
                    realm=REALM, session_id=s, client_ids=[CLIENT_ID]
                ).SerializeToString()
                for s in self.session_ids
            ]

        def call(slot: int) -> Awaitable[object]:
            self.counter += 1
            return calls[slot % len(calls)](
                requests[self.counter % len(requests)], timeout=CALL_TIMEOUT_SECONDS
            )

        return call

    async def run(self, command: dict[str, Any]) -> dict[str, Any]:
        """Keep `concurrency` calls in flight from `start_at` for `seconds`; return latencies in µs."""
        op = self.operation(command["case"], command.get("target", ""), int(command.get("payload_bytes", 0)))
        concurrency = int(command["concurrency"])
        start_at, seconds = float(command["start_at"]), float(command["seconds"])
        end_at = start_at + seconds
        latencies: list[int] = []
        errors: list[str] = []
        last_done = start_at
        exhausted = False

        async def slot_loop(slot: int) -> None:
            nonlocal last_done, exhausted
            while True:
                began = time.monotonic()
                if began >= end_at:
                    return
                try:
                    await op(slot)
                except PoolExhaustedError:
                    exhausted = True
                    return
                except (grpc.RpcError, SessionStoreError, redis.RedisError, CheckFailedError) as exc:
                    errors.append(type(exc).__name__)
                    continue
                done = time.monotonic()
                latencies.append(int((done - began) * 1e6))
                last_done = max(last_done, done)

        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu_before = time.process_time()
        await asyncio.gather(*(slot_loop(i) for i in range(concurrency)))
        return {
            "ops": len(latencies),
            "elapsed": max(last_done - start_at, 1e-9),
            "latencies_us": latencies,
            "errors": len(errors),
            "error_kinds": sorted(set(errors)),
            "exhausted": exhausted,
            "cpu_s": time.process_time() - cpu_before,
        }

    async def close(self) -> None:
        """Close every channel and pool."""
        for client in self.clients:
            await client.close()
        for channels in self.raw_channels.values():
            for channel in channels:
                await channel.close()
        for r in self.redis_clients.values():
            await r.aclose()
        if self.router is not None:
            await self.router.close()


async def _worker_main(args: argparse.Namespace) -> None:
    worker = Worker(
        service=args.service,
        shard_urls=_parse_shards(args.shards),
        channels=args.channels,
        index=args.index,
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
            if command["cmd"] == "quit":
                return
            if command["cmd"] == "prepare":
                answer = await worker.prepare(int(command["sessions"]), int(command.get("chains", 0)))
            elif command["cmd"] == "fill":
                answer = await worker.fill_codes(
                    int(command["codes"]), int(command["lifespan"]), float(command["max_age"])
                )
            else:
                answer = await worker.run(command)
            print(json.dumps(answer), flush=True)
    finally:
        await worker.close()


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


def _total_cpu(pids: Sequence[int]) -> float:
    return sum(_cpu_seconds(p) for p in pids)


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, steal excluded), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system = (int(x) for x in fields[:3])
    # irq and softirq time (loopback TCP of our own processes) is charged to no process: left out.
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


@dataclass
class Child:
    """A process this script started, with pipes when it talks JSON lines."""

    name: str
    process: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    def send(self, message: dict[str, Any]) -> None:
        """One JSON command line."""
        assert self.process.stdin is not None  # noqa: S101 - started with a pipe
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = ANSWER_TIMEOUT_SECONDS) -> dict[str, Any]:
        """One JSON answer line, within `timeout` seconds.

        Raises:
            RuntimeError: the process ended or did not answer in time.
        """
        assert self.process.stdout is not None  # noqa: S101 - started with a pipe
        # One command, one answer line: nothing is left in the text buffer between answers.
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"{self.name} (pid {self.pid}) did not answer within {timeout:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} (pid {self.pid}) exited with {self.process.wait()}")
        try:
            answer: dict[str, Any] = json.loads(line)
        except ValueError:
            raise RuntimeError(f"{self.name} (pid {self.pid}) answered {line[:200]!r}") from None
        return answer

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait; by PID only."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@dataclass
class Sample:
    """One case in one round, merged over the load clients."""

    ops: int
    seconds: float
    latencies_us: list[int]
    errors: int
    cpu_us_per_op: dict[str, float]
    p: dict[str, float] | None = None  # percentiles reported by redis-benchmark itself
    other_cores: float = 0.0  # CPU used meanwhile by processes this script did not start
    exhausted: bool = False  # a load client ran out of pre-created codes before the end

    @property
    def rate(self) -> float:
        """Operations per second."""
        return self.ops / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Bench:
    """Processes, their addresses and the samples taken."""

    args: argparse.Namespace
    tmp: Path
    children: list[Child] = field(default_factory=list)
    shards: EmbeddedShards | None = None
    redis_procs: list[RedisProcess] = field(default_factory=list)
    service_child: Child | None = None
    echo_children: dict[str, Child] = field(default_factory=dict)
    workers: list[Child] = field(default_factory=list)
    service_target: str = ""
    echo_targets: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    redis_bench_rate: dict[int, float] = field(default_factory=dict)
    code_client_rate: float = 0.0
    """Highest code-exchange rate of any one load client so far (sizes the next code pools)."""
    short_runs: list[str] = field(default_factory=list)
    """Cases whose code pool ran out in a kept run (its rate is understated)."""

    def spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, pipes: bool) -> Child:
        """Start a child in a session of its own (Ctrl-C reaches only us; we stop it by PID)."""
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

    def start(self) -> None:
        """Shards, service, load clients, then the echo server sized like a real create call."""
        self.shards = EmbeddedShards(self.tmp / "redis", 3, appendonly=False)
        self.redis_procs = self.shards.start()
        urls = ",".join(f"{p.name}={p.url}" for p in self.redis_procs)
        port = free_port()
        env = {
            **os.environ,
            "SESSION_STORE_REDIS_URLS": urls,
            "SESSION_STORE_LISTEN": f"127.0.0.1:{port}",
            "SESSION_STORE_LOG_LEVEL": "warning",
            "SESSION_STORE_GRACE_SECONDS": "0",
        }
        self.service_child = self.spawn(
            "service", [sys.executable, "-m", "session_store", "serve"], env=env, pipes=False
        )
        self.service_target = f"127.0.0.1:{port}"
        _wait_serving(self.service_target, self.service_child)
        for i in range(self.args.clients):
            worker = self.spawn(
                f"client-{i}",
                [
                    sys.executable,
                    __file__,
                    "_worker",
                    "--service",
                    self.service_target,
                    "--shards",
                    urls,
                    "--channels",
                    str(self.args.channels),
                    "--index",
                    str(i),
                ],
                pipes=True,
            )
            self.workers.append(worker)
        for worker in self.workers:
            worker.receive()
        per_client = max(_split(self.args.concurrency, len(self.workers)))
        chains = (
            max(ROTATION_CHAINS_PER_CLIENT, 2 * per_client) if "refresh-rotation" in self.args.cases else 0
        )
        for worker in self.workers:
            worker.send({"cmd": "prepare", "sessions": SESSIONS_PER_CLIENT, "chains": chains})
        self.sizes = [w.receive() for w in self.workers][0]  # noqa: RUF015 - every worker must answer
        for case, shards in (("echo", ""), ("echo-redis", urls)):
            argv = [sys.executable, __file__, "_echo", "--port", str(free_port())]
            argv += ["--reply-bytes", str(self.sizes["reply_bytes"]), "--shards", shards]
            child = self.echo_children[case] = self.spawn(case, argv, pipes=True)
            self.echo_targets[case] = f"127.0.0.1:{child.receive()['port']}"
        print(
            f"pids: service {self.service_child.pid}, "
            f"echo {[c.pid for c in self.echo_children.values()]}, "
            f"load clients {[w.pid for w in self.workers]}, redis {[p.pid for p in self.redis_procs]}",
            flush=True,
        )

    def cpu_pids(self, case: str) -> dict[str, list[int]]:
        """Which processes count as server, Redis and load client for a case."""
        redis_pids = [p.pid for p in self.redis_procs]
        client_pids = [w.pid for w in self.workers]
        if case in ECHO_CASES:
            redis_used = redis_pids if case == "echo-redis" else []
            return {"server": [self.echo_children[case].pid], "redis": redis_used, "client": client_pids}
        if case == "redis" or case in REPO_CASES:
            return {"server": [], "redis": redis_pids, "client": client_pids}
        assert self.service_child is not None  # noqa: S101 - started in start()
        return {"server": [self.service_child.pid], "redis": redis_pids, "client": client_pids}

    def fill_codes(self, seconds: float) -> None:
        """Before a code-exchange run (outside its time and CPU accounting): enough codes on every
        load client for `seconds` at the fastest load client's highest rate so far (the load clients
        do not get equal shares of the CPU) or the guess, with a margin; bounded.
        """
        rate = max(self.code_client_rate, CODE_RATE_GUESS / len(self.workers))
        per_client = [
            min(CODE_POOL_MAX_PER_CLIENT, math.ceil(CODE_POOL_MARGIN * rate * seconds) + concurrency)
            for concurrency in _split(self.args.concurrency, len(self.workers))
        ]
        # Keycloak's 60 s, unless the run is so long that a code could expire before it is taken.
        lifespan = max(CODE_LIFESPAN_SECONDS, math.ceil(seconds) + 2 * CODE_LIFESPAN_SLACK_SECONDS)
        max_age = lifespan - seconds - CODE_LIFESPAN_SLACK_SECONDS
        for worker, codes in zip(self.workers, per_client, strict=True):
            worker.send({"cmd": "fill", "codes": codes, "lifespan": lifespan, "max_age": max_age})
        for worker, codes in zip(self.workers, per_client, strict=True):
            worker.receive(ANSWER_TIMEOUT_SECONDS + codes / CODES_PER_SECOND_FLOOR)

    def run_case(self, case: str, seconds: float) -> Sample:
        """Run one case on every load client at once; merge what they measured.

        code-exchange first fills the code pools; a run in which a pool ran out is repeated with
        larger pools (a few times at most), since its load was not kept up to the end.
        """
        if case != "code-exchange":
            return self._run_once(case, seconds)
        for _ in range(CODE_POOL_ATTEMPTS):
            self.fill_codes(seconds)
            sample = self._run_once(case, seconds)
            if not sample.exhausted:
                return sample
            print(f"{case}: a load client ran out of codes; running again with larger pools", flush=True)
        self.short_runs.append(case)
        return sample

    def _run_once(self, case: str, seconds: float) -> Sample:
        pids = self.cpu_pids(case)
        ours = [c.pid for c in self.children] + [p.pid for p in self.redis_procs] + [os.getpid()]
        ours_before, machine_before, wall_before = _total_cpu(ours), _machine_busy_seconds(), time.monotonic()
        before = {role: sum(_cpu_seconds(p) for p in ps) for role, ps in pids.items()}
        start_at = time.monotonic() + 0.2
        per_client = _split(self.args.concurrency, len(self.workers))
        target = self.echo_targets.get(case, self.service_target)
        for worker, concurrency in zip(self.workers, per_client, strict=True):
            worker.send(
                {
                    "cmd": "run",
                    "case": case,
                    "target": target,
                    "payload_bytes": self.sizes["request_bytes"],
                    "concurrency": concurrency,
                    "start_at": start_at,
                    "seconds": seconds,
                }
            )
        answers = [w.receive(ANSWER_TIMEOUT_SECONDS + seconds) for w in self.workers]
        after = {role: sum(_cpu_seconds(p) for p in ps) for role, ps in pids.items()}
        other = (_machine_busy_seconds() - machine_before) - (_total_cpu(ours) - ours_before)
        ops = sum(a["ops"] for a in answers)
        cpu = {role: (after[role] - before[role]) * 1e6 / ops if ops and pids[role] else 0.0 for role in pids}
        elapsed = max(a["elapsed"] for a in answers)
        exhausted = any(a["exhausted"] for a in answers)
        if case == "code-exchange":
            # A load client that ran out stopped early: its ops over its own elapsed time is its rate.
            fastest = max(a["ops"] / a["elapsed"] for a in answers)
            self.code_client_rate = max(self.code_client_rate, fastest * (2 if exhausted else 1))
        return Sample(
            ops=ops,
            seconds=elapsed,
            latencies_us=[x for a in answers for x in a["latencies_us"]],
            errors=sum(a["errors"] for a in answers),
            cpu_us_per_op=cpu,
            other_cores=max(0.0, other / (time.monotonic() - wall_before)),
            exhausted=exhausted,
        )

    def run_redis_benchmark(self, seconds: float, pipeline: int) -> Sample | None:
        """redis-benchmark EVALSHA of the create script on shard-0 (database 15, flushed after)."""
        shard = self.redis_procs[0]
        sha = load_scripts()["create_user_session"].sha
        guess = self.redis_bench_rate.get(pipeline, REDIS_BENCH_GUESS_PER_SECOND * (2 if pipeline > 1 else 1))
        requests = max(1000, int(guess * seconds))
        script_args = ["", *_POLICY_ARGS, "__rand_int__", REALM, "__rand_int__", "user@example.com"]
        script_args += ["10.0.0.1", "openid-connect", "0", "", "", "0", *NO_LIMITS, str(len(CREATE_NOTES))]
        for name, value in CREATE_NOTES.items():
            script_args += [name, value]
        argv = [
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            str(shard.port),
            "-c",
            str(self.args.concurrency),
            "-n",
            str(requests),
            "-r",
            "1000000000",
            "-P",
            str(pipeline),
            "--dbnum",
            str(REDIS_BENCH_DB),
            "--csv",
            "EVALSHA",
            sha,
            "3",
            "ss:{rb}:s:__rand_int__",
            "ss:{rb}:u:bench-realm __rand_int__",
            "ss:{rb}:r:bench-realm",
            *script_args,
        ]
        # redis-benchmark exits at the first error reply, and its random ids collide now and then
        # (the create script answers SS_EXISTS): such a run is repeated on an emptied database.
        for _ in range(REDIS_BENCH_ATTEMPTS):
            redis_cpu = _cpu_seconds(shard.pid)
            started = time.monotonic()
            result = subprocess.run(  # noqa: S603 - a fixed tool with our own arguments
                argv, capture_output=True, text=True, timeout=60 + 10 * seconds, check=False
            )
            elapsed = time.monotonic() - started
            redis_cpu = _cpu_seconds(shard.pid) - redis_cpu
            with redis.Redis(host="127.0.0.1", port=shard.port, db=REDIS_BENCH_DB) as r:
                r.flushdb()
            if result.returncode == 0:
                break
        else:
            print(f"redis-benchmark failed: {result.stderr.strip()[-200:]}", flush=True)
            return None
        out = result.stdout
        rows = list(csv.reader(io.StringIO(out)))
        header, values = rows[0], rows[-1]
        data = dict(zip(header, values, strict=True))
        rate = float(data["rps"])
        self.redis_bench_rate[pipeline] = rate
        return Sample(
            ops=requests,
            seconds=requests / rate if rate else elapsed,
            latencies_us=[],
            errors=0,
            cpu_us_per_op={"server": 0.0, "redis": redis_cpu * 1e6 / requests, "client": 0.0},
            p={
                "p50": float(data["p50_latency_ms"]),
                "p95": float(data["p95_latency_ms"]),
                "p99": float(data["p99_latency_ms"]),
            },
        )

    def measure(self, case: str, seconds: float) -> dict[str, Sample]:
        """Samples of one case (redis-bench gives two: unpipelined and pipelined)."""
        if case == "redis-bench":
            runs = {
                "redis-bench": self.run_redis_benchmark(seconds / 2, 1),
                f"redis-bench -P{REDIS_BENCH_PIPELINE}": self.run_redis_benchmark(
                    seconds / 2, REDIS_BENCH_PIPELINE
                ),
            }
            return {name: sample for name, sample in runs.items() if sample is not None}
        return {case: self.run_case(case, seconds)}

    def run(self) -> None:
        """Warm up every case once, then the rounds, rotating the case order each round."""
        cases = list(self.args.cases)
        if "redis-bench" in cases and shutil.which("redis-benchmark") is None:
            print("redis-benchmark is not on PATH: skipping the redis-bench case", flush=True)
            cases.remove("redis-bench")
        for case in cases:
            self.measure(case, self.args.warmup)
        for r in range(self.args.rounds):
            order = cases[r % len(cases) :] + cases[: r % len(cases)]
            for case in order:
                for name, sample in self.measure(case, self.args.seconds).items():
                    self.samples.setdefault(name, []).append(sample)
                    print(
                        f"round {r + 1}/{self.args.rounds} {name:<16} {sample.rate:9.0f} ops/s"
                        + (f"  ({sample.errors} errors)" if sample.errors else ""),
                        flush=True,
                    )

    def stop(self) -> None:
        """Every child by PID (workers asked to quit first), then the shards."""
        for worker in self.workers:
            with contextlib.suppress(OSError, ValueError):
                worker.send({"cmd": "quit"})
        for child in reversed(self.children):
            child.stop()
        if self.shards is not None:
            self.shards.stop()


def _parse_shards(text: str) -> dict[str, str]:
    """`name=url,name=url` (as SESSION_STORE_REDIS_URLS) into a dict; empty text gives none."""
    return dict(part.split("=", 1) for part in text.split(",") if part)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _wait_serving(target: str, child: Child, timeout: float = 30.0) -> None:
    """Until the service's health check says SERVING.

    Raises:
        RuntimeError: the service exited or did not serve within `timeout`.
    """
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        # A typed method of our own: the health stubs lack the generated methods.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"the service exited with {child.process.returncode}")
            with contextlib.suppress(grpc.RpcError):
                reply = check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"the service did not serve on {target} within {timeout} s")


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index] / 1000.0


def _redis_version() -> str:
    try:
        out = subprocess.run(
            ["redis-server", "--version"],  # noqa: S607 - the tool on PATH is the one we describe
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.split("v=", 1)[1].split()[0] if "v=" in out else out.strip()


def _code_version() -> str:
    """The commit measured, and whether session_store/ had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(  # noqa: S603 - fixed arguments
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],  # noqa: S607 - git on PATH
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 - fixed arguments
            ["git", "-C", str(root), "status", "--porcelain", "--", "session_store"],  # noqa: S607 - git on PATH
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in session_store/' if dirty else ''}"


def report(bench: Bench, out: IO[str]) -> dict[str, Any]:
    """Print the results table and ratios; return them as data."""
    args = bench.args
    print(
        f"\nmachine: nproc={os.cpu_count()} python={platform.python_version()} grpcio={grpc.__version__} "
        f"redis-server={_redis_version()} redis-py={redis.__version__}; code {_code_version()}",
        file=out,
    )
    print(
        f"load client: {args.clients} Python grpc.aio processes x {args.channels} channels, "
        f"{args.concurrency} calls in flight in total; {args.rounds} rounds x {args.seconds} s per case; "
        f"create request {bench.sizes['request_bytes']} B, reply {bench.sizes['reply_bytes']} B "
        f"(get reply with one client session {bench.sizes['get_reply_bytes']} B)",
        file=out,
    )
    print(
        "CPU columns: CPU time per operation of the server process (service or echo), the Redis shards "
        "and the load clients; other = cores busy meanwhile in processes this script did not start.",
        file=out,
    )
    header = (
        f"{'case':<18}{'ops/s':>9}{'min':>8}{'max':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}"
        f"{'srv µs':>8}{'redis µs':>9}{'cli µs':>8}{'other':>7}{'errors':>7}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    data: dict[str, Any] = {"cases": {}, "ratios": {}, "sizes": bench.sizes}
    for name, samples in bench.samples.items():
        rates = [s.rate for s in samples]
        lat = sorted(x for s in samples for x in s.latencies_us)
        if samples[0].p is not None:
            pct = {k: statistics.median(s.p[k] for s in samples if s.p) for k in ("p50", "p95", "p99")}
        else:
            pct = {
                "p50": _percentile(lat, 0.50),
                "p95": _percentile(lat, 0.95),
                "p99": _percentile(lat, 0.99),
            }
        cpu = {
            role: statistics.median(s.cpu_us_per_op[role] for s in samples)
            for role in ("server", "redis", "client")
        }
        row = {
            "ops_per_s": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            **pct,
            "cpu_us_per_op": cpu,
            "errors": sum(s.errors for s in samples),
            "other_cores": max(s.other_cores for s in samples),
            "rounds": rates,
        }
        data["cases"][name] = row

        def fmt(v: float) -> str:
            return f"{v:8.0f}" if v else f"{'-':>8}"

        print(
            f"{name:<18}{row['ops_per_s']:9.0f}{row['min']:8.0f}{row['max']:8.0f}"
            f"{pct['p50']:8.2f}{pct['p95']:8.2f}{pct['p99']:8.2f}"
            f"{fmt(cpu['server'])}{fmt(cpu['redis']):>9}{fmt(cpu['client'])}"
            f"{row['other_cores']:7.2f}{row['errors']:7d}",
            file=out,
        )
    if bench.short_runs:
        print(
            f"\nWARNING: a code pool ran out in {len(bench.short_runs)} kept run(s) (warm-up included), "
            f"even after {CODE_POOL_ATTEMPTS} attempts: code-exchange's rate is understated; rerun.",
            file=out,
        )
    busiest = max((s.other_cores for samples in bench.samples.values() for s in samples), default=0.0)
    if busiest > OTHER_LOAD_WARNING_CORES:
        print(
            f"\nWARNING: other processes kept up to {busiest:.2f} cores busy during a case: "
            "the numbers are disturbed; rerun on a quiet machine.",
            file=out,
        )
    for reference in ECHO_CASES:
        if reference in bench.samples:
            _ratios(bench, reference, data, out)
    return data


def _ratios(bench: Bench, reference: str, data: dict[str, Any], out: IO[str]) -> None:
    """Service cases divided by a reference case, round by round (targets apply to `echo` only)."""
    ref = bench.samples[reference]
    print(
        f"\nratios to {reference} (median of the ratios within each round, where both ran seconds apart):",
        file=out,
    )
    for name in (*SERVICE_CASES, *FLOW_CASES, *RAW_CASES):
        if name not in bench.samples:
            continue
        samples = bench.samples[name]
        ratios = [s.rate / e.rate for s, e in zip(samples, ref, strict=True)]
        ratio = statistics.median(ratios)
        # Server CPU per call, reference over case: the capacity ratio when each server is bound by
        # its one Python thread; it moves less than ops/s when other processes take CPU.
        cpu_ratio = statistics.median(
            e.cpu_us_per_op["server"] / s.cpu_us_per_op["server"]
            for s, e in zip(samples, ref, strict=True)
            if s.cpu_us_per_op["server"]
        )
        verb = name.removesuffix("-raw")
        target = TARGETS.get(verb) if reference == "echo" else None
        p99 = data["cases"][name]["p99"]
        verdict = ""
        if target is not None:
            outcome = "met" if ratio >= target else f"MISSED by {target - ratio:.2f}"
            verdict = f"target >= {target:.2f}: {outcome}"
        p99_verdict = ""
        if reference == "echo":
            p99_verdict = f"p99 {p99:.1f} ms {'<' if p99 < P99_TARGET_MS else '>='} {P99_TARGET_MS:.0f} ms"
        rounds = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"  {name + ' / ' + reference:<30} {ratio:5.2f}  (rounds: {rounds}; server CPU {cpu_ratio:.2f})  "
            f"{verdict}{'; ' if verdict and p99_verdict else ''}{p99_verdict}",
            file=out,
        )
        data["ratios"][f"{name}/{reference}"] = {"median": ratio, "rounds": ratios, "server_cpu": cpu_ratio}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("_worker", help=argparse.SUPPRESS)
    worker.add_argument("--service", required=True)
    worker.add_argument("--shards", required=True)
    worker.add_argument("--channels", type=int, default=DEFAULT_CHANNELS)
    worker.add_argument("--index", type=int, default=0)
    echo = sub.add_parser("_echo", help=argparse.SUPPRESS)
    echo.add_argument("--port", type=int, required=True)
    echo.add_argument("--reply-bytes", type=int, required=True)
    echo.add_argument("--shards", default="", help="name=url,...: run the create script in every call")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per case per round")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="calls in flight in total"
    )
    parser.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="load-client processes")
    parser.add_argument(
        "--channels", type=int, default=DEFAULT_CHANNELS, help="gRPC channels per load client"
    )
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_SECONDS, help="seconds per case, once")
    parser.add_argument(
        "--cases", default=",".join(ALL_CASES), help=f"comma-separated subset of {','.join(ALL_CASES)}"
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.command is None:
        args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = set(args.cases) - set(ALL_CASES)
        if unknown:
            parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
        limits = {"--seconds": args.seconds > 0 and args.seconds <= 60, "--rounds": 1 <= args.rounds <= 20}
        limits |= {"--concurrency": 1 <= args.concurrency <= 4096, "--clients": 1 <= args.clients <= 16}
        limits |= {"--channels": 1 <= args.channels <= 64, "--warmup": 0 <= args.warmup <= 30}
        for name, ok in limits.items():
            if not ok:
                parser.error(f"{name} is out of range")
        if args.concurrency < args.clients:
            parser.error("--concurrency must be at least --clients")
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or one of its own child processes); returns the exit code."""
    args = _parse(argv)
    # To stderr, in every process: a worker's stdout carries its JSON answers only.
    configure_logging("warning", json=False)
    if args.command == "_worker":
        asyncio.run(_worker_main(args))
        return 0
    if args.command == "_echo":
        asyncio.run(_echo_main(args.port, args.reply_bytes, _parse_shards(args.shards)))
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C must stop everything even where SIGINT was ignored at start (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="session-store-bench-"))
    bench = Bench(args, tmp)
    try:
        bench.start()
        bench.run()
        data = report(bench, sys.stdout)
        if args.json:
            data["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            args.json.write_text(json.dumps(data, indent=2) + "\n")
    except KeyboardInterrupt:
        print("interrupted: stopping every started process", file=sys.stderr)
        return 130
    finally:
        bench.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
