"""The asyncio client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
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
    ) -> None:
        """Open a channel to `target` (host:port or unix:/path); no call is made yet."""
        self._channel = grpc.aio.insecure_channel(target, options=list(channel_options))
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
                reply = await getattr(self._stubs[op.service], op.method)(op.request, timeout=self._timeout)
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
                request, timeout=REMOVAL_TIMEOUT_SECONDS
            ):
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
