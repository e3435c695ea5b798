"""The SessionStore and TestClock gRPC servicers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog

from session_store.api import convert
from session_store.api._status import to_status
from session_store.errors import InvalidArgumentError, SessionStoreError
from session_store.model.clock import TestClock
from session_store.model.session import validate_redirect_uri, validate_text
from session_store.storage.bulk import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, BulkRemoval, RemovalScope
from session_store.storage.policies import PolicyStore
from session_store.storage.sessions import SessionRepository
from session_store.v1 import session_store_pb2 as pb
from session_store.v1 import session_store_pb2_grpc as pb_grpc
from session_store.v1 import test_clock_pb2 as clock_pb
from session_store.v1 import test_clock_pb2_grpc as clock_pb_grpc

log = structlog.get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Req, Context], Awaitable[Resp]]
StreamHandler = Callable[[Any, Req, Context], AsyncGenerator[Resp, None]]


def rpc(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map our exceptions to statuses, answer anything unexpected as INTERNAL, log one line."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: Context) -> Resp:
        structlog.contextvars.bind_contextvars(rpc=name)
        start = time.perf_counter()
        code = "OK"
        try:
            return await method(self, request, context)
        except SessionStoreError as exc:
            code = exc.code
            await context.abort_with_status(to_status(exc))
            raise  # unreachable: abort_with_status raises
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("rpc_failed")
            await context.abort_with_status(to_status(SessionStoreError("internal error")))
            raise
        finally:
            log.debug("rpc", method=name, code=code, ms=round((time.perf_counter() - start) * 1000, 3))
            structlog.contextvars.unbind_contextvars("rpc")

    return wrapper


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


class SessionStoreServicer(pb_grpc.SessionStoreServicer):
    """Every SessionStore RPC: validate, call the repository, convert the answer."""

    def __init__(self, sessions: SessionRepository, policies: PolicyStore, bulk: BulkRemoval) -> None:
        """Serve from these stores."""
        self._sessions = sessions
        self._policies = policies
        self._bulk = bulk

    @rpc
    async def CreateUserSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.CreateUserSessionRequest, context: Context
    ) -> pb.UserSession:
        """See the proto."""
        new = convert.new_user_session(request)
        sid = convert.session_id(request.session_id) if request.session_id else None
        limits = convert.limits(request)
        return convert.session_to_proto(await self._sessions.create_user_session(new, sid, limits))

    @rpc
    async def GetUserSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.GetUserSessionRequest, context: Context
    ) -> pb.UserSession:
        """See the proto."""
        session = await self._sessions.get_user_session(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            offline=request.offline,
        )
        return convert.session_to_proto(session)

    @rpc
    async def TouchUserSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.TouchUserSessionRequest, context: Context
    ) -> pb.UserSession:
        """See the proto."""
        session = await self._sessions.touch_user_session(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            offline=request.offline,
            at=convert.timestamp(request.last_session_refresh, "last_session_refresh"),
            client_ids=convert.client_ids(request.client_ids),
        )
        return convert.session_to_proto(session)

    @rpc
    async def UpdateUserSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.UpdateUserSessionRequest, context: Context
    ) -> pb.UserSession:
        """See the proto."""
        set_notes, remove_notes = convert.notes_change(request.set_notes, request.remove_notes)
        state = convert.state(request.state) if request.HasField("state") else None
        session = await self._sessions.update_user_session(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            offline=request.offline,
            set_notes=set_notes,
            remove_notes=remove_notes,
            state=state,
        )
        return convert.session_to_proto(session)

    @rpc
    async def RemoveUserSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.RemoveUserSessionRequest, context: Context
    ) -> pb.RemoveUserSessionResponse:
        """See the proto."""
        removed = await self._sessions.remove_user_session(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            offline=request.offline,
            revoked_by_admin=request.revoked_by_admin,
        )
        return pb.RemoveUserSessionResponse(removed=removed)

    @rpc
    async def AttachClientSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.AttachClientSessionRequest, context: Context
    ) -> pb.ClientSession:
        """See the proto."""
        client = await self._sessions.attach_client_session(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            convert.new_client_session(request),
            offline=request.offline,
            limits=convert.limits(request),
        )
        return convert.client_to_proto(client)

    @rpc
    async def GetClientSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.GetClientSessionRequest, context: Context
    ) -> pb.ClientSession:
        """See the proto."""
        client = await self._sessions.get_client_session(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            convert.client_id(request.client_id),
            offline=request.offline,
        )
        return convert.client_to_proto(client)

    @rpc
    async def UpdateClientSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.UpdateClientSessionRequest, context: Context
    ) -> pb.ClientSession:
        """See the proto."""
        set_notes, remove_notes = convert.notes_change(request.set_notes, request.remove_notes)
        client = await self._sessions.update_client_session(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            convert.client_id(request.client_id),
            offline=request.offline,
            redirect_uri=validate_redirect_uri(request.redirect_uri)
            if request.HasField("redirect_uri")
            else None,
            action=validate_text(request.action, "action") if request.HasField("action") else None,
            protocol=validate_text(request.protocol, "protocol") if request.HasField("protocol") else None,
            set_notes=set_notes,
            remove_notes=remove_notes,
            timestamp=convert.timestamp(request.timestamp, "timestamp"),
        )
        return convert.client_to_proto(client)

    @rpc
    async def DetachClientSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.DetachClientSessionRequest, context: Context
    ) -> pb.DetachClientSessionResponse:
        """See the proto."""
        removed = await self._sessions.detach_client_session(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            convert.client_id(request.client_id),
            offline=request.offline,
        )
        return pb.DetachClientSessionResponse(removed=removed)

    @rpc
    async def ListUserSessions(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.ListUserSessionsRequest, context: Context
    ) -> pb.ListUserSessionsResponse:
        """See the proto."""
        sessions = await self._sessions.list_user_sessions(
            convert.realm(request.realm), convert.user_id(request.user_id), offline=request.offline
        )
        return pb.ListUserSessionsResponse(sessions=[convert.session_to_proto(s) for s in sessions])

    @rpc
    async def RemoveUserSessions(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.RemoveUserSessionsRequest, context: Context
    ) -> pb.RemoveUserSessionsResponse:
        """See the proto."""
        removed = await self._sessions.remove_user_sessions(
            convert.realm(request.realm), convert.user_id(request.user_id), offline=request.offline
        )
        return pb.RemoveUserSessionsResponse(removed=removed)

    @rpc
    async def CountSessions(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.CountSessionsRequest, context: Context
    ) -> pb.CountSessionsResponse:
        """See the proto."""
        client = convert.client_id(request.client_id) if request.client_id else ""
        count = await self._sessions.count_sessions(
            convert.realm(request.realm), client, offline=request.offline
        )
        return pb.CountSessionsResponse(count=count)

    @rpc
    async def GetClientSessionStats(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.GetClientSessionStatsRequest, context: Context
    ) -> pb.GetClientSessionStatsResponse:
        """See the proto."""
        counts = await self._sessions.client_session_stats(
            convert.realm(request.realm), offline=request.offline
        )
        return pb.GetClientSessionStatsResponse(counts=counts)

    @rpc
    async def FindUserSessionByBrokerSessionId(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.FindUserSessionByBrokerSessionIdRequest, context: Context
    ) -> pb.UserSession:
        """See the proto."""
        if not request.broker_session_id:
            raise InvalidArgumentError("broker_session_id must not be empty")
        session = await self._sessions.find_by_broker_session_id(
            convert.realm(request.realm),
            validate_text(request.broker_session_id, "broker_session_id"),
        )
        return convert.session_to_proto(session)

    @rpc
    async def FindUserSessionsByBrokerUserId(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.FindUserSessionsByBrokerUserIdRequest, context: Context
    ) -> pb.ListUserSessionsResponse:
        """See the proto."""
        if not request.broker_user_id:
            raise InvalidArgumentError("broker_user_id must not be empty")
        sessions = await self._sessions.find_by_broker_user_id(
            convert.realm(request.realm),
            validate_text(request.broker_user_id, "broker_user_id"),
            offline=request.offline,
        )
        return pb.ListUserSessionsResponse(sessions=[convert.session_to_proto(s) for s in sessions])

    @rpc
    async def CreateOfflineSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.CreateOfflineSessionRequest, context: Context
    ) -> pb.UserSession:
        """See the proto."""
        session = await self._sessions.create_offline_session(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            convert.client_ids(request.client_ids),
        )
        return convert.session_to_proto(session)

    @rpc
    async def UseRefreshToken(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.UseRefreshTokenRequest, context: Context
    ) -> pb.UseRefreshTokenResponse:
        """See the proto."""
        use = await self._sessions.use_refresh_token(
            convert.realm(request.realm),
            convert.session_id(request.session_id),
            convert.refresh_token(request),
            offline=request.offline,
            new_issued_at=convert.timestamp(request.new_issued_at, "new_issued_at"),
            introspect=request.introspect,
        )
        return convert.refresh_token_use_to_proto(use)

    @stream_rpc
    async def RemoveSessions(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.RemoveSessionsRequest, context: Context
    ) -> AsyncGenerator[pb.RemoveSessionsProgress, None]:
        """See the proto. Errors end the stream with a status, as in unary calls."""
        realm = convert.realm(request.realm)
        scope_name = request.WhichOneof("scope")
        if scope_name is None:
            raise InvalidArgumentError("one of all, client_id or expired must be set")
        if scope_name == "client_id":
            scope, client = RemovalScope.CLIENT, convert.client_id(request.client_id)
        elif scope_name == "all" and request.all:
            scope, client = RemovalScope.REALM, ""
        elif scope_name == "expired" and request.expired:
            scope, client = RemovalScope.EXPIRED, ""
        else:
            raise InvalidArgumentError(f"{scope_name} must be true")
        if not 0 <= request.batch_size <= MAX_BATCH_SIZE:
            raise InvalidArgumentError(f"batch_size must be between 1 and {MAX_BATCH_SIZE} (0 = default)")
        batch = request.batch_size or DEFAULT_BATCH_SIZE
        async for progress in self._bulk.remove(realm, scope, client_id=client, batch_size=batch):
            yield pb.RemoveSessionsProgress(
                removed=progress.removed,
                partitions_done=progress.partitions_done,
                partitions_total=progress.partitions_total,
            )
        log.info("sessions_removed", scope=scope.name, removed=progress.removed)

    @rpc
    async def SetRealmPolicy(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.SetRealmPolicyRequest, context: Context
    ) -> pb.RealmPolicy:
        """See the proto."""
        if not request.HasField("policy"):
            raise InvalidArgumentError("policy is required")
        cached = await self._policies.set(convert.policy_from_proto(request.policy))
        return convert.policy_to_proto(cached.policy)

    @rpc
    async def GetRealmPolicy(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.GetRealmPolicyRequest, context: Context
    ) -> pb.RealmPolicy:
        """See the proto."""
        cached = await self._policies.get(convert.realm(request.realm))
        return convert.policy_to_proto(cached.policy)


class TestClockServicer(clock_pb_grpc.TestClockServicer):
    """Moves the server's frozen test clock (registered only with --test-clock)."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, clock: TestClock) -> None:
        """Serve this clock."""
        self._clock = clock

    @rpc
    async def AdvanceClock(  # noqa: N802 - gRPC method names are the proto's
        self, request: clock_pb.AdvanceClockRequest, context: Context
    ) -> clock_pb.ClockReading:
        """See the proto."""
        if not request.seconds >= 0:
            raise InvalidArgumentError("seconds must be >= 0")
        return clock_pb.ClockReading(now_ms=self._clock.advance(request.seconds))

    @rpc
    async def GetClock(  # noqa: N802 - gRPC method names are the proto's
        self, request: clock_pb.GetClockRequest, context: Context
    ) -> clock_pb.ClockReading:
        """See the proto."""
        return clock_pb.ClockReading(now_ms=self._clock.now_ms)
