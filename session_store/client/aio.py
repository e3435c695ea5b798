"""The asyncio client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import grpc

from session_store.api.convert_events import event_from_proto
from session_store.client._base import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT_SECONDS,
    MOVE_TIMEOUT_SECONDS,
    REMOVAL_TIMEOUT_SECONDS,
    MoveReport,
    Operation,
    Operations,
    backoff,
    error_from_rpc,
    move_report,
    move_request,
    removal_progress,
    remove_sessions_request,
    should_retry,
)
from session_store.client._credentials import ClientTLS, TokenSource, auth_metadata
from session_store.client._watch import (
    DEFAULT_WATCH_ATTEMPTS,
    ENDED_MESSAGE,
    resume_request,
    should_resume,
    watch_request,
)
from session_store.errors import SessionStoreError, UnavailableError
from session_store.events.stream import EventType, SessionEvent
from session_store.model.session import RemovalProgress
from session_store.v1 import (
    authentication_sessions_pb2_grpc,
    cluster_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    login_failures_pb2_grpc,
    session_store_pb2_grpc,
    single_use_objects_pb2_grpc,
    tokens_pb2_grpc,
)

if TYPE_CHECKING:
    from session_store.v1.events_pb2_grpc import SessionEventsAsyncStub

P = ParamSpec("P")
T = TypeVar("T")


def _op(
    build: Callable[P, Operation[T]],
) -> Callable[Concatenate[AsyncSessionStoreClient, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncSessionStoreClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run(build(*args, **kwargs))

    method.__doc__ = build.__doc__
    method.__name__ = build.__name__
    return method


class AsyncSessionStoreClient:
    """Talks to a session-store server from asyncio code.

    Every method raises the same :mod:`session_store.errors` classes the server raised. Calls that
    are safe to repeat are retried on UNAVAILABLE with jittered back-off; creates are retried only
    when the server proves they did not run.

    Example::

        async with AsyncSessionStoreClient("127.0.0.1:50051") as store:
            session = await store.create_user_session("my-realm", "user-1", ip_address="10.0.0.7")
            await store.attach_client_session("my-realm", session.id, "account-console")
            await store.touch_user_session("my-realm", session.id, client_ids=["account-console"])
            await store.remove_user_session("my-realm", session.id)
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        channel_options: Sequence[tuple[str, Any]] = (),
        tls: ClientTLS | None = None,
        token: TokenSource | None = None,
    ) -> None:
        """Open a channel to `target` (host:port or unix:/path); no call is made yet.

        Args:
            target: the server's address.
            timeout: seconds per call.
            max_attempts: tries of a retryable call.
            channel_options: extra gRPC channel options.
            tls: TLS to the server (its CA, and our certificate for mutual TLS); None: plaintext.
            token: a bearer token, or a callable returning the current one (asked before every call),
                sent as `authorization: Bearer …`; None: none.
        """
        self._token = token
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=list(channel_options))
        else:
            self._channel = grpc.aio.secure_channel(
                target, tls.channel_credentials(), options=[*channel_options, *tls.channel_options()]
            )
        # One stub per gRPC service; an Operation names the one that carries it.
        self._stubs: dict[str, Any] = {
            "SessionStore": session_store_pb2_grpc.SessionStoreStub(self._channel),
            "AuthenticationSessions": authentication_sessions_pb2_grpc.AuthenticationSessionsStub(
                self._channel
            ),
            "SingleUseObjects": single_use_objects_pb2_grpc.SingleUseObjectsStub(self._channel),
            "LoginFailures": login_failures_pb2_grpc.LoginFailuresStub(self._channel),
            "SessionEvents": events_pb2_grpc.SessionEventsStub(self._channel),
            "TokenValidation": tokens_pb2_grpc.TokenValidationStub(self._channel),
            "ClusterAdmin": cluster_pb2_grpc.ClusterAdminStub(self._channel),
        }
        self._timeout = timeout
        self._max_attempts = max_attempts

    async def __aenter__(self) -> AsyncSessionStoreClient:
        """Use as an async context manager; the channel closes on exit."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the channel."""
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def run(self, op: Operation[T]) -> T:
        """Carry one operation over the wire with the retry policy.

        Raises:
            SessionStoreError: a subclass matching the server's status.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = await getattr(self._stubs[op.service], op.method)(
                    op.request, timeout=self._timeout, metadata=auth_metadata(self._token)
                )
            except grpc.RpcError as err:
                exc = error_from_rpc(err)
                if not should_retry(exc, op, attempt, self._max_attempts):
                    raise exc from None
                await asyncio.sleep(backoff(attempt))
                continue
            return op.convert(reply)

    async def remove_sessions(
        self,
        realm: str,
        *,
        client_id: str = "",
        expired: bool = False,
        batch_size: int = 0,
        on_progress: Callable[[RemovalProgress], None] | None = None,
    ) -> RemovalProgress:
        """Remove every session of a realm (default), one client's client sessions (`client_id`), or the
        expired leftovers (`expired`), in batches; returns the final progress. Not retried: rerun it.

        Raises:
            SessionStoreError: a subclass matching the server's status.
        """
        request = remove_sessions_request(realm, client_id=client_id, expired=expired, batch_size=batch_size)
        last = RemovalProgress(0, 0, 0)
        try:
            async for reply in self._stubs["SessionStore"].RemoveSessions(
                request, timeout=REMOVAL_TIMEOUT_SECONDS, metadata=auth_metadata(self._token)
            ):
                last = removal_progress(reply)
                if on_progress is not None:
                    on_progress(last)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return last

    async def add_shard(
        self,
        url: str,
        *,
        name: str = "",
        weight: int = 0,
        partitions_per_second: float = 0.0,
        on_progress: Callable[[MoveReport], None] | None = None,
    ) -> MoveReport:
        """Add an empty shard and move its share of the partitions to it (ClusterAdmin.AddShard); returns
        the final report. Not retried: the move goes on without the caller; see `get_topology`.

        Raises:
            SessionStoreError: a subclass matching the server's status.
        """
        request = move_request(
            "AddShard", url, name=name, weight=weight, partitions_per_second=partitions_per_second
        )
        return await self._move("AddShard", request, on_progress)

    async def remove_shard(
        self,
        shard: str,
        *,
        partitions_per_second: float = 0.0,
        on_progress: Callable[[MoveReport], None] | None = None,
    ) -> MoveReport:
        """Move every partition off a shard (ClusterAdmin.RemoveShard); returns the final report.

        Raises:
            SessionStoreError: a subclass matching the server's status.
        """
        request = move_request("RemoveShard", shard, partitions_per_second=partitions_per_second)
        return await self._move("RemoveShard", request, on_progress)

    async def resume_move(
        self, *, partitions_per_second: float = 0.0, on_progress: Callable[[MoveReport], None] | None = None
    ) -> MoveReport:
        """Repair and finish a move plan a stopped mover left (ClusterAdmin.ResumeMove).

        Raises:
            SessionStoreError: a subclass matching the server's status.
        """
        request = move_request("ResumeMove", partitions_per_second=partitions_per_second)
        return await self._move("ResumeMove", request, on_progress)

    async def _move(
        self, method: str, request: Any, on_progress: Callable[[MoveReport], None] | None
    ) -> MoveReport:
        last = MoveReport(0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0, done=False)
        try:
            async for reply in getattr(self._stubs["ClusterAdmin"], method)(
                request, timeout=MOVE_TIMEOUT_SECONDS, metadata=auth_metadata(self._token)
            ):
                last = move_report(reply)
                if on_progress is not None:
                    on_progress(last)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return last

    def watch(
        self,
        *,
        realms: Iterable[str] = (),
        types: Iterable[EventType] = (),
        user_id: str = "",
        after_cursor: str = "",
        from_oldest: bool = False,
        max_attempts: int = DEFAULT_WATCH_ATTEMPTS,
    ) -> AsyncEventWatch:
        """Follow session events as they happen, resuming by itself after disconnects.

        Args:
            realms: only events of these realms (empty: all).
            types: only events of these types (empty: all).
            user_id: only events of this user (needs `realms`).
            after_cursor: continue right after this cursor (a `SessionEvent.cursor` or
                `AsyncEventWatch.cursor` saved earlier).
            from_oldest: without a cursor, start from the oldest retained event instead of now.
            max_attempts: consecutive failed (re)connections before giving up.

        Returns:
            An async iterator of `SessionEvent`; nothing is sent until it is first awaited, and the
            errors below come from iterating it. Close it (``aclose`` or ``async with``) to end the
            watch.

        Raises:
            InvalidArgumentError: a bad filter or a malformed cursor.
            EventsTrimmedError: the position was trimmed away (fell behind or too old a cursor).
            UnavailableError: no server answered within `max_attempts`.
        """
        request = watch_request(
            realms=realms, types=types, user_id=user_id, after_cursor=after_cursor, from_oldest=from_oldest
        )
        return AsyncEventWatch(
            self._stubs["SessionEvents"],
            request,
            max_attempts=max_attempts,
            metadata=lambda: auth_metadata(self._token),
        )

    create_user_session = _op(Operations.create_user_session)
    get_user_session = _op(Operations.get_user_session)
    touch_user_session = _op(Operations.touch_user_session)
    update_user_session = _op(Operations.update_user_session)
    remove_user_session = _op(Operations.remove_user_session)
    attach_client_session = _op(Operations.attach_client_session)
    get_client_session = _op(Operations.get_client_session)
    update_client_session = _op(Operations.update_client_session)
    detach_client_session = _op(Operations.detach_client_session)
    list_user_sessions = _op(Operations.list_user_sessions)
    remove_user_sessions = _op(Operations.remove_user_sessions)
    count_sessions = _op(Operations.count_sessions)
    get_client_session_stats = _op(Operations.get_client_session_stats)
    find_user_session_by_broker_session_id = _op(Operations.find_user_session_by_broker_session_id)
    find_user_sessions_by_broker_user_id = _op(Operations.find_user_sessions_by_broker_user_id)
    create_offline_session = _op(Operations.create_offline_session)
    use_refresh_token = _op(Operations.use_refresh_token)
    set_realm_policy = _op(Operations.set_realm_policy)
    get_realm_policy = _op(Operations.get_realm_policy)
    get_or_create_root_authentication_session = _op(Operations.get_or_create_root_authentication_session)
    get_root_authentication_session = _op(Operations.get_root_authentication_session)
    remove_root_authentication_session = _op(Operations.remove_root_authentication_session)
    restart_root_authentication_session = _op(Operations.restart_root_authentication_session)
    create_authentication_session = _op(Operations.create_authentication_session)
    get_authentication_session = _op(Operations.get_authentication_session)
    update_authentication_session = _op(Operations.update_authentication_session)
    remove_authentication_session = _op(Operations.remove_authentication_session)
    put_single_use_object = _op(Operations.put_single_use_object)
    put_single_use_object_if_absent = _op(Operations.put_single_use_object_if_absent)
    get_single_use_object = _op(Operations.get_single_use_object)
    take_single_use_object = _op(Operations.take_single_use_object)
    replace_single_use_object = _op(Operations.replace_single_use_object)
    contains_single_use_object = _op(Operations.contains_single_use_object)
    record_login_failure = _op(Operations.record_login_failure)
    get_login_failure = _op(Operations.get_login_failure)
    clear_login_failure = _op(Operations.clear_login_failure)
    remove_login_failure = _op(Operations.remove_login_failure)
    remove_realm_login_failures = _op(Operations.remove_realm_login_failures)
    validate_token = _op(Operations.validate_token)
    get_topology = _op(Operations.get_topology)


class AsyncEventWatch:
    """An async iterator of `SessionEvent` from Watch, resumed after the last cursor when the stream
    breaks (UNAVAILABLE, CANCELLED, a lost connection), with jittered back-off."""

    def __init__(
        self,
        stub: SessionEventsAsyncStub,
        request: events_pb2.WatchRequest,
        *,
        max_attempts: int = DEFAULT_WATCH_ATTEMPTS,
        metadata: Callable[[], tuple[tuple[str, str], ...] | None] = lambda: None,
    ) -> None:
        """Prepare the watch; the first call is made when the iterator is first awaited.

        `metadata` is asked before every (re)connection: the bearer token, when the client has one.
        """
        self._stub = stub
        self._metadata = metadata
        self._request = request
        self._max_attempts = max_attempts
        self._cursor = request.after_cursor
        self._call: Any = None
        self._closed = False
        self._iterating = False
        self._events = self._run()

    @property
    def cursor(self) -> str:
        """The position after every message received so far (events and checkpoints); empty until the
        first one arrives. Save it to continue later with `watch(after_cursor=...)`."""
        return self._cursor

    def __aiter__(self) -> AsyncEventWatch:
        """The watch is its own iterator."""
        return self

    async def __anext__(self) -> SessionEvent:
        """The next event.

        Raises:
            StopAsyncIteration: the watch was closed.
            SessionStoreError: a subclass matching the server's status (see `watch`).
        """
        self._iterating = True
        try:
            return await self._events.__anext__()
        finally:
            self._iterating = False

    async def aclose(self) -> None:
        """End the watch (cancels the call); iterating afterwards stops."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        if not self._iterating:  # else the running __anext__ sees the cancelled call and stops
            await self._events.aclose()

    async def __aenter__(self) -> AsyncEventWatch:
        """Use as an async context manager; the watch ends on exit."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """End the watch."""
        await self.aclose()

    async def _run(self) -> AsyncGenerator[SessionEvent, None]:
        attempt = 0
        while not self._closed:
            call = self._stub.Watch(resume_request(self._request, self._cursor), metadata=self._metadata())
            self._call = call
            error: SessionStoreError = UnavailableError(ENDED_MESSAGE)
            try:
                async for reply in call:
                    attempt = 0
                    self._cursor = reply.cursor
                    event = event_from_proto(reply)
                    if event is not None:
                        yield event
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            except asyncio.CancelledError:
                if self._closed:  # our own cancel of the call, from aclose
                    return
                raise
            finally:
                self._call = None
                call.cancel()
            if self._closed:
                return
            attempt += 1
            if not should_resume(error, attempt, self._max_attempts):
                raise error
            await asyncio.sleep(backoff(attempt))
