"""Command line: `session-store serve` (also `python -m session_store serve`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from collections.abc import Callable
from urllib.parse import urlsplit

import structlog

from session_store.config import Settings, SettingsError, ShardSettings
from session_store.embedded import EmbeddedRedisError, EmbeddedShards
from session_store.errors import SessionStoreError
from session_store.logging import configure_logging
from session_store.model.clock import TestClock
from session_store.security.encryption import NoteCipher
from session_store.security.rotation import rotate_keys
from session_store.security.setup import ServerSecurity
from session_store.security.tokens import check_token_files
from session_store.security.transport import exposure
from session_store.server import SessionStoreServer, run_until_signal
from session_store.storage.access import build_shards, load_redis_access
from session_store.storage.rebalance import MoveProgress, Rebalancer
from session_store.storage.router import Router
from session_store.storage.shard import Shard

log = structlog.get_logger(__name__)


async def _serve(settings: Settings, *, test_clock: bool) -> int:
    embedded: EmbeddedShards | None = None
    shards = settings.redis.shards
    if not shards:
        embedded = EmbeddedShards(
            settings.redis.data_dir,
            settings.redis.embedded_shards,
            binary=settings.redis.server_binary,
        )
        started = await asyncio.to_thread(embedded.start)
        shards = tuple(ShardSettings(name=p.name, url=p.url) for p in started)
        log.info(
            "embedded_shards_started",
            count=len(started),
            data_dir=str(settings.redis.data_dir),
            pids=[p.pid for p in started],
        )
    try:
        if test_clock:
            log.warning(
                "test_clock_enabled",
                detail="expiry uses a frozen clock moved by RPC: never in production",
            )
        server = SessionStoreServer(settings, shards, clock=TestClock() if test_clock else None)
        try:
            await server.start()
        except SessionStoreError as exc:
            log.error("startup_failed", error=exc.message)
            await server.router.close()
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_until_signal(server, stop)
        return 0
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
            log.info("embedded_shards_stopped")


def _tool_factory(settings: Settings) -> Callable[[str, str], Shard]:
    """Shards for command-line tools: the service's TLS and credentials, no memory guard (tools only
    rewrite or move existing data)."""

    def factory(name: str, url: str) -> Shard:
        return build_shards(settings.redis, [ShardSettings(name=name, url=url)], guard=False)[name]

    return factory


def _tool_router(settings: Settings) -> Router:
    """A router over the configured shards that also reaches the shards the stored map names."""
    factory = _tool_factory(settings)
    return Router(
        {s.name: factory(s.name, s.url) for s in settings.redis.shards}, factory=factory, refresh_seconds=0
    )


async def _rotate(settings: Settings, *, rate: float) -> int:
    if not settings.redis.shards or not settings.encryption_keys_file:
        print(
            "session-store: keys rotate needs SESSION_STORE_REDIS_URLS and "
            "SESSION_STORE_ENCRYPTION_KEYS_FILE",
            file=sys.stderr,
        )
        return 2
    cipher = NoteCipher.from_file(settings.encryption_keys_file)
    # The service's TLS and credentials; no memory guard: rotation rewrites existing hashes only.
    router = _tool_router(settings)
    try:
        await router.connect(attempts=settings.redis.startup_attempts)
        await rotate_keys(router, cipher, max_keys_per_second=rate)
    except SessionStoreError as exc:
        log.error("key_rotation_failed", error=exc.message)
        return 1
    finally:
        await router.close()
    return 0


def _shard_name(url: str) -> str:
    """A shard's default name: host:port/db of its URL (never its credentials)."""
    parts = urlsplit(url)
    if parts.scheme.endswith("+sentinel"):  # several sentinel hosts: the group is its master name
        return parts.path.strip("/") or "sentinel"
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname}:{parts.port or 6379}/{db}" if parts.hostname else parts.path


async def _cluster(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.redis.shards:
        print("session-store: cluster commands need SESSION_STORE_REDIS_URLS", file=sys.stderr)
        return 2

    factory = _tool_factory(settings)
    router = _tool_router(settings)

    def report(progress: MoveProgress) -> None:
        if progress.moved % 25 == 0 or progress.moved == progress.total:
            print(json.dumps({"progress": progress.summary()}), flush=True)

    mover = Rebalancer(router, partitions_per_second=getattr(args, "rate", 100.0), on_progress=report)
    try:
        await router.connect(attempts=settings.redis.startup_attempts)
        if args.cluster_command == "status":
            status = await mover.status()
            print(f"map epoch {status.epoch}")
            for shard in status.shards:
                size = "down" if shard.keys is None else f"{shard.keys} keys"
                print(f"  {shard.name:<24} weight {shard.weight}  {shard.partitions:>5} partitions  {size}")
            if status.plan_id:
                print(f"move plan {status.plan_id}: {status.plan_done}/{status.plan_moves} moved")
            return 0
        if args.cluster_command == "add-shard":
            name = args.name or _shard_name(args.url)
            result = await mover.add_shard(name, factory(name, args.url), weight=args.weight)
        elif args.cluster_command == "remove-shard":
            by_url = {s.url: n for n, s in router.shards.items()}
            result = await mover.remove_shard(by_url.get(args.shard, args.shard))
        else:
            resumed = await mover.recover(resume=True)
            if resumed is None:
                print("nothing to resume (no plan, or another mover holds the lease)")
                return 0
            result = resumed
        print(json.dumps({"done": result.summary()}), flush=True)
        return 0
    except SessionStoreError as exc:
        log.error("cluster_command_failed", command=args.cluster_command, error=exc.message)
        return 1
    finally:
        await router.close()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; returns the exit code."""
    parser = argparse.ArgumentParser(prog="session-store", description="Clustered session store.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gRPC service (starts local Redis shards if none set)")
    serve.add_argument("--listen", help="host:port or unix:/path (default SESSION_STORE_LISTEN)")
    serve.add_argument(
        "--test-clock",
        action="store_true",
        help="use a frozen clock moved by the TestClock RPC (tests only, never production)",
    )
    serve.add_argument(
        "--allow-insecure",
        action="store_true",
        help="serve the API beyond loopback without TLS and caller authentication "
        "(as SESSION_STORE_ALLOW_INSECURE_REMOTE=true; logged as a warning)",
    )
    keys_cmd = sub.add_parser("keys", help="manage the encryption keys of stored notes")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser(
        "rotate", help="re-encrypt every note value under the newest key (the service may keep running)"
    )
    rotate.add_argument("--rate", type=float, default=2000.0, help="most hashes rewritten per second")
    cluster = sub.add_parser("cluster", help="inspect the partition map; add or remove shards while serving")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    cluster_sub.add_parser("status", help="map epoch, partitions and keys per shard, any move in progress")
    add = cluster_sub.add_parser("add-shard", help="add a shard and move its share of the partitions to it")
    add.add_argument("url", help="redis://host:port[/db] (or rediss://) of the new, empty shard")
    add.add_argument("--name", default="", help="the shard's name in the map (default host:port/db)")
    add.add_argument("--weight", type=int, default=1, help="its share relative to the others (default 1)")
    remove = cluster_sub.add_parser("remove-shard", help="move every partition off a shard")
    remove.add_argument("shard", help="the shard's name or URL")
    cluster_sub.add_parser("resume", help="finish a move plan that a stopped mover left")
    for mover_cmd in (add, remove, cluster_sub.choices["resume"]):
        mover_cmd.add_argument(
            "--rate", type=float, default=100.0, help="most partitions flipped per second (default 100)"
        )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if getattr(args, "listen", None):
            settings = dataclasses.replace(settings, listen=args.listen)
        if settings.encryption_keys_file:
            NoteCipher.from_file(settings.encryption_keys_file)  # a bad key file fails before anything starts
        check_token_files(settings.tokens)  # so does a bad token realms, JWKS or secret file
        load_redis_access(settings.redis)  # and a bad Redis password or TLS file
        if getattr(args, "allow_insecure", False):
            settings = dataclasses.replace(
                settings, auth=dataclasses.replace(settings.auth, allow_insecure_remote=True)
            )
        if args.command == "serve":
            # Bad TLS, JWKS or callers files and an unprotected non-loopback API fail before anything starts.
            ServerSecurity(settings.auth)
            exposure(settings.listen, settings.auth)
    except SettingsError as exc:
        print(f"session-store: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json=settings.log_json)
    if args.command == "keys":
        return asyncio.run(_rotate(settings, rate=args.rate))
    if args.command == "cluster":
        return asyncio.run(_cluster(settings, args))
    try:
        return asyncio.run(_serve(settings, test_clock=args.test_clock))
    except EmbeddedRedisError as exc:
        log.error("embedded_redis_failed", error=str(exc))
        return 1
