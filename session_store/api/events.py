"""The SessionEvents gRPC servicer: validate the watch, stream what the node's StreamHub delivers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import grpc
import structlog

from session_store.api import convert_events
from session_store.api._status import to_status
from session_store.api.servicer import Context
from session_store.errors import SessionStoreError
from session_store.events.watch import StreamHub
from session_store.v1 import events_pb2 as pb
from session_store.v1 import events_pb2_grpc as pb_grpc

log = structlog.get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
StreamHandler = Callable[[Any, Req, Context], AsyncGenerator[Resp, None]]


def stream_rpc(method: StreamHandler[Req, Resp]) -> StreamHandler[Req, Resp]:
    """The server-streaming twin of `servicer.rpc`: our exceptions end the stream with their status,
    anything unexpected with INTERNAL (logged once), and one debug line per call."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: Context) -> AsyncGenerator[Resp, None]:
        structlog.contextvars.bind_contextvars(rpc=name)
        start = time.perf_counter()
        code = "OK"
        try:
            async with contextlib.aclosing(method(self, request, context)) as replies:
                async for reply in replies:
                    yield reply
        except SessionStoreError as exc:
            code = exc.code
            await context.abort_with_status(to_status(exc))
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("rpc_failed")
            await context.abort_with_status(to_status(SessionStoreError("internal error")))
        finally:
            log.debug("rpc", method=name, code=code, ms=round((time.perf_counter() - start) * 1000, 3))
            structlog.contextvars.unbind_contextvars("rpc")

    return wrapper


class SessionEventsServicer(pb_grpc.SessionEventsServicer):
    """The Watch RPC, over this node's StreamHub."""

    def __init__(self, hub: StreamHub) -> None:
        """Serve the watches from this hub."""
        self._hub = hub

    @stream_rpc
    async def Watch(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.WatchRequest, context: Context
    ) -> AsyncGenerator[pb.Event, None]:
        """See the proto."""
        event_filter = convert_events.watch_filter(request)
        after_cursor, from_oldest = convert_events.watch_start(request)
        items = self._hub.watch(event_filter, after_cursor=after_cursor, from_oldest=from_oldest)
        async with contextlib.aclosing(items):
            async for item in items:
                yield convert_events.event_to_proto(item.event, item.cursor)
