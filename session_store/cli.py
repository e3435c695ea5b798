"""Command line: `session-store serve` (also `python -m session_store serve`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys

import structlog

from session_store.config import Settings, SettingsError, ShardSettings
from session_store.embedded import EmbeddedRedisError, EmbeddedShards
from session_store.errors import SessionStoreError
from session_store.logging import configure_logging
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer, run_until_signal

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
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.listen:
            settings = dataclasses.replace(settings, listen=args.listen)
    except SettingsError as exc:
        print(f"session-store: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json=settings.log_json)
    try:
        return asyncio.run(_serve(settings, test_clock=args.test_clock))
    except EmbeddedRedisError as exc:
        log.error("embedded_redis_failed", error=str(exc))
        return 1
