"""The ClusterAdmin gRPC servicer: the partition map, and shard moves run on this node."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from session_store.api.servicer import Context, rpc, stream_rpc
from session_store.config import SettingsError, parse_shards
from session_store.errors import InvalidArgumentError, PreconditionFailedError
from session_store.storage.rebalance import DEFAULT_PARTITIONS_PER_SECOND, MoveProgress, Rebalancer
from session_store.storage.router import Router, ShardFactory
from session_store.storage.topology import public_url
from session_store.v1 import cluster_pb2 as pb
from session_store.v1 import cluster_pb2_grpc as pb_grpc

_SHARD_NAME = re.compile(r"[A-Za-z0-9._:/-]{1,64}")
REPORT_EVERY = 25
"""Partitions between two progress messages."""
MAX_RATE = 100_000.0
MAX_URL_LENGTH = 2048


def _rate(value: float) -> float:
    if value < 0 or value > MAX_RATE or value != value:  # noqa: PLR0124 - NaN check
        raise InvalidArgumentError(f"partitions_per_second must be within 0..{MAX_RATE:.0f}")
    return value or DEFAULT_PARTITIONS_PER_SECOND


def _progress(progress: MoveProgress, *, done: bool) -> pb.MoveProgress:
    summary = progress.summary()
    return pb.MoveProgress(
        moved=progress.moved,
        total=progress.total,
        keys_copied=progress.keys_copied,
        keys_per_second=progress.keys_per_second,
        elapsed_seconds=progress.elapsed,
        eta_seconds=progress.eta_seconds,
        pause_p99_ms=float(summary["pause_p99_ms"]),
        epoch=progress.epoch,
        done=done,
    )


class ClusterAdminServicer(pb_grpc.ClusterAdminServicer):
    """GetTopology, AddShard, RemoveShard, ResumeMove over this node's router."""

    def __init__(self, router: Router, factory: ShardFactory) -> None:
        """Move through `router`; `factory` builds the connection to a shard being added."""
        self._router = router
        self._factory = factory
        self._moving: asyncio.Task[MoveProgress | None] | None = None

    @rpc
    async def GetTopology(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.GetTopologyRequest, context: Context
    ) -> pb.Topology:
        """See the proto."""
        status = await Rebalancer(self._router).status()
        return pb.Topology(
            epoch=status.epoch,
            shards=[
                pb.ShardInfo(
                    name=s.name,
                    url=public_url(s.url),
                    weight=s.weight,
                    partitions=s.partitions,
                    keys=-1 if s.keys is None else s.keys,
                )
                for s in status.shards
            ],
            plan_id=status.plan_id,
            plan_moves=status.plan_moves,
            plan_done=status.plan_done,
        )

    @stream_rpc
    async def AddShard(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.AddShardRequest, context: Context
    ) -> AsyncGenerator[pb.MoveProgress, None]:
        """See the proto."""
        if request.name and not _SHARD_NAME.fullmatch(request.name):
            raise InvalidArgumentError("name: 1-64 characters of letters, digits and ._:/-")
        if request.weight > 1000:
            raise InvalidArgumentError("weight must be within 0..1000")
        if not 0 < len(request.url) <= MAX_URL_LENGTH:
            raise InvalidArgumentError(f"url: 1-{MAX_URL_LENGTH} characters")
        try:
            (shard_settings,) = parse_shards(f"{request.name}={request.url}" if request.name else request.url)
        except (SettingsError, ValueError):
            # The parser's message may quote the URL: never echo (possibly secret) input back.
            raise InvalidArgumentError("url: not a redis://, rediss:// or redis+sentinel:// URL") from None
        rate = _rate(request.partitions_per_second)
        shard = self._factory(shard_settings.name, shard_settings.url)
        async for reply in self._run(
            rate, lambda mover: mover.add_shard(shard_settings.name, shard, weight=request.weight or 1)
        ):
            yield reply

    @stream_rpc
    async def RemoveShard(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.RemoveShardRequest, context: Context
    ) -> AsyncGenerator[pb.MoveProgress, None]:
        """See the proto."""
        if not _SHARD_NAME.fullmatch(request.shard):
            raise InvalidArgumentError("shard: the name of a shard in the map")
        rate = _rate(request.partitions_per_second)
        async for reply in self._run(rate, lambda mover: mover.remove_shard(request.shard)):
            yield reply

    @stream_rpc
    async def ResumeMove(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.ResumeMoveRequest, context: Context
    ) -> AsyncGenerator[pb.MoveProgress, None]:
        """See the proto."""
        rate = _rate(request.partitions_per_second)
        async for reply in self._run(rate, lambda mover: mover.recover(resume=True)):
            yield reply

    async def _run(
        self, rate: float, start: Callable[[Rebalancer], Coroutine[Any, Any, MoveProgress | None]]
    ) -> AsyncGenerator[pb.MoveProgress, None]:
        """Run a move in a task of its own (it outlives the call), streaming its progress."""
        if self._moving is not None and not self._moving.done():
            raise PreconditionFailedError("this node is already running a move")
        updates: asyncio.Queue[MoveProgress] = asyncio.Queue()

        def report(progress: MoveProgress) -> None:
            if progress.moved % REPORT_EVERY == 0:
                updates.put_nowait(progress)

        mover = Rebalancer(self._router, partitions_per_second=rate, on_progress=report)
        task: asyncio.Task[MoveProgress | None] = asyncio.get_running_loop().create_task(start(mover))
        self._moving = task
        while not task.done():
            waiter = asyncio.ensure_future(updates.get())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                yield _progress(waiter.result(), done=False)
            else:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        final = task.result()  # raises the move's error, answered with its status
        yield _progress(final or MoveProgress(total=0), done=True)

    async def stop(self) -> None:
        """Cancel a move in progress (server shutdown); the next start or `resume` repairs it."""
        if self._moving is not None and not self._moving.done():
            self._moving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._moving
