"""The blocking client (same operations, errors and retry policy as the asyncio one)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc

from session_store.client._base import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT_SECONDS,
    REMOVAL_TIMEOUT_SECONDS,
    Operation,
    Operations,
    backoff,
    error_from_rpc,
    removal_progress,
    remove_sessions_request,
    should_retry,
)
from session_store.model.session import RemovalProgress
from session_store.v1 import (
    authentication_sessions_pb2_grpc,
    login_failures_pb2_grpc,
    session_store_pb2_grpc,
    single_use_objects_pb2_grpc,
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
    ) -> None:
        """Open a channel to `target` (host:port or unix:/path); no call is made yet."""
        self._channel = grpc.insecure_channel(target, options=list(channel_options))
        # One stub per gRPC service; an Operation names the one that carries it.
        self._stubs: dict[str, Any] = {
            "SessionStore": session_store_pb2_grpc.SessionStoreStub(self._channel),
            "AuthenticationSessions": authentication_sessions_pb2_grpc.AuthenticationSessionsStub(
                self._channel
            ),
            "SingleUseObjects": single_use_objects_pb2_grpc.SingleUseObjectsStub(self._channel),
            "LoginFailures": login_failures_pb2_grpc.LoginFailuresStub(self._channel),
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
                reply = getattr(self._stubs[op.service], op.method)(op.request, timeout=self._timeout)
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
            for reply in self._stubs["SessionStore"].RemoveSessions(request, timeout=REMOVAL_TIMEOUT_SECONDS):
                last = removal_progress(reply)
                if on_progress is not None:
                    on_progress(last)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return last

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
