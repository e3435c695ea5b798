"""The blocking client (same operations, errors and retry policy as the asyncio one)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

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

P = ParamSpec("P")
T = TypeVar("T")


def _op(build: Callable[P, Operation[T]]) -> Callable[Concatenate[SessionStoreClient, P], T]:
    def method(self: SessionStoreClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.run(build(*args, **kwargs))

    method.__doc__ = build.__doc__
    method.__name__ = build.__name__
    return method


class SessionStoreClient:
    """Talks to a session-store server from blocking code; see AsyncSessionStoreClient."""

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
            self._channel = grpc.insecure_channel(target, options=list(channel_options))
        else:
            self._channel = grpc.secure_channel(
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

    def __enter__(self) -> SessionStoreClient:
        """Use as a context manager; the channel closes on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the channel."""
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def run(self, op: Operation[T]) -> T:
        """Carry one operation over the wire with the retry policy.

        Raises:
            SessionStoreError: a subclass matching the server's status.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = getattr(self._stubs[op.service], op.method)(
                    op.request, timeout=self._timeout, metadata=auth_metadata(self._token)
                )
            except grpc.RpcError as err:
                exc = error_from_rpc(err)
                if not should_retry(exc, op, attempt, self._max_attempts):
                    raise exc from None
                time.sleep(backoff(attempt))
                continue
            return op.convert(reply)

    def remove_sessions(
        self,
        realm: str,
        *,
        client_id: str = "",
        expired: bool = False,
        batch_size: int = 0,
        on_progress: Callable[[RemovalProgress], None] | None = None,
    ) -> RemovalProgress:
        """Remove sessions in bulk; see AsyncSessionStoreClient.remove_sessions.

        Raises:
            SessionStoreError: a subclass matching the server's status.
        """
        request = remove_sessions_request(realm, client_id=client_id, expired=expired, batch_size=batch_size)
        last = RemovalProgress(0, 0, 0)
        try:
            for reply in self._stubs["SessionStore"].RemoveSessions(
                request, timeout=REMOVAL_TIMEOUT_SECONDS, metadata=auth_metadata(self._token)
            ):
                last = removal_progress(reply)
                if on_progress is not None:
                    on_progress(last)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return last

    def add_shard(
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
        return self._move("AddShard", request, on_progress)

    def remove_shard(
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
        return self._move("RemoveShard", request, on_progress)

    def resume_move(
        self, *, partitions_per_second: float = 0.0, on_progress: Callable[[MoveReport], None] | None = None
    ) -> MoveReport:
        """Repair and finish a move plan a stopped mover left (ClusterAdmin.ResumeMove).

        Raises:
            SessionStoreError: a subclass matching the server's status.
        """
        request = move_request("ResumeMove", partitions_per_second=partitions_per_second)
        return self._move("ResumeMove", request, on_progress)

    def _move(
        self, method: str, request: Any, on_progress: Callable[[MoveReport], None] | None
    ) -> MoveReport:
        last = MoveReport(0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0, done=False)
        try:
            for reply in getattr(self._stubs["ClusterAdmin"], method)(
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
    ) -> EventWatch:
        """Follow session events, resuming by itself after disconnects; see AsyncSessionStoreClient.watch.

        Returns:
            An iterator of `SessionEvent`; nothing is sent until it is first iterated. Close it
            (``close``, from any thread, or ``with``) to end the watch.
        """
        request = watch_request(
            realms=realms, types=types, user_id=user_id, after_cursor=after_cursor, from_oldest=from_oldest
        )
        return EventWatch(
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


class EventWatch:
    """An iterator of `SessionEvent` from Watch, resumed after the last cursor when the stream breaks;
    see AsyncEventWatch."""

    def __init__(
        self,
        stub: events_pb2_grpc.SessionEventsStub,
        request: events_pb2.WatchRequest,
        *,
        max_attempts: int = DEFAULT_WATCH_ATTEMPTS,
        metadata: Callable[[], tuple[tuple[str, str], ...] | None] = lambda: None,
    ) -> None:
        """Prepare the watch; the first call is made when the iterator is first advanced.

        `metadata` is asked before every (re)connection: the bearer token, when the client has one.
        """
        self._stub = stub
        self._metadata = metadata
        self._request = request
        self._max_attempts = max_attempts
        self._cursor = request.after_cursor
        self._call: Any = None
        self._lock = threading.Lock()
        self._closed = False
        self._events = self._run()

    @property
    def cursor(self) -> str:
        """The position after every message received so far (events and checkpoints); empty until the
        first one arrives. Save it to continue later with `watch(after_cursor=...)`."""
        return self._cursor

    def __iter__(self) -> EventWatch:
        """The watch is its own iterator."""
        return self

    def __next__(self) -> SessionEvent:
        """The next event (blocks until there is one).

        Raises:
            StopIteration: the watch was closed.
            SessionStoreError: a subclass matching the server's status (see `watch`).
        """
        return next(self._events)

    def close(self) -> None:
        """End the watch (cancels the call; a thread blocked in `next` gets StopIteration)."""
        with self._lock:
            self._closed = True
            if self._call is not None:
                self._call.cancel()

    def __enter__(self) -> EventWatch:
        """Use as a context manager; the watch ends on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """End the watch."""
        self.close()

    def _run(self) -> Generator[SessionEvent, None, None]:
        attempt = 0
        while True:
            with self._lock:
                if self._closed:
                    return
                call = self._stub.Watch(
                    resume_request(self._request, self._cursor), metadata=self._metadata()
                )
                self._call = call
            error: SessionStoreError = UnavailableError(ENDED_MESSAGE)
            try:
                for reply in call:
                    attempt = 0
                    self._cursor = reply.cursor
                    event = event_from_proto(reply)
                    if event is not None:
                        yield event
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            finally:
                with self._lock:
                    self._call = None
                call.cancel()
            if self._closed:
                return
            attempt += 1
            if not should_resume(error, attempt, self._max_attempts):
                raise error
            time.sleep(backoff(attempt))
