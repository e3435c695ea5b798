"""What both clients share: request building, reply conversion, error mapping and retry policy.

Each public operation is described once here as an :class:`Operation` (RPC method, request, how to
convert the reply, whether a retry is safe); the async and sync clients only carry it over the wire.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from session_store.errors import (
    ERROR_DOMAIN,
    ERRORS_BY_REASON,
    InvalidArgumentError,
    PartitionFrozenError,
    PartitionMovedError,
    PermissionDeniedError,
    SessionExistsError,
    SessionNotFoundError,
    SessionStoreError,
    UnauthenticatedError,
    UnavailableError,
)
from session_store.model.policy import ClientPolicy, RealmPolicy
from session_store.model.session import ClientSession, UserSession, UserSessionState
from session_store.v1 import session_store_pb2 as pb

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BACKOFF_SECONDS = 0.05

_BY_CODE: dict[grpc.StatusCode, type[SessionStoreError]] = {
    grpc.StatusCode.NOT_FOUND: SessionNotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: SessionExistsError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}
_NOT_EXECUTED = (PartitionMovedError, PartitionFrozenError)
"""Errors that prove the call did not run: always safe to retry."""


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One RPC: method name, request, reply conversion, and whether retrying it is safe."""

    method: str
    request: Any
    convert: Callable[[Any], T]
    idempotent: bool = True


def error_from_rpc(err: grpc.RpcError) -> SessionStoreError:
    """The session-store exception a failed call stands for (same class as the server raised)."""
    message = err.details() if hasattr(err, "details") else str(err)
    status = rpc_status.from_call(cast(grpc.Call, err)) if hasattr(err, "trailing_metadata") else None
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                return ERRORS_BY_REASON.get(info.reason, SessionStoreError)(message or info.reason)
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    return _BY_CODE.get(code, SessionStoreError)(message or code.name)


def should_retry(exc: SessionStoreError, op: Operation[Any], attempt: int, max_attempts: int) -> bool:
    """Retry UNAVAILABLE-type errors for idempotent calls, and not-executed errors for any call."""
    if attempt >= max_attempts or not isinstance(exc, UnavailableError):
        return False
    return op.idempotent or isinstance(exc, _NOT_EXECUTED)


def backoff(attempt: int, base: float = DEFAULT_BACKOFF_SECONDS) -> float:
    """Exponential back-off with full jitter."""
    return random.uniform(0, base * (2 ** (attempt - 1)))  # noqa: S311 - jitter, not security


def _client(c: pb.ClientSession) -> ClientSession:
    return ClientSession(
        client_id=c.client_id,
        user_session_id=c.user_session_id,
        offline=c.offline,
        redirect_uri=c.redirect_uri,
        action=c.action,
        protocol=c.protocol,
        timestamp=c.timestamp,
        started=c.started,
        user_session_started=c.user_session_started,
        notes=dict(c.notes),
        expires_at_ms=c.expires_at_ms,
    )


def _session(s: pb.UserSession) -> UserSession:
    return UserSession(
        id=s.id,
        realm=s.realm,
        user_id=s.user_id,
        offline=s.offline,
        login_username=s.login_username,
        ip_address=s.ip_address,
        auth_method=s.auth_method,
        remember_me=s.remember_me,
        started=s.started,
        last_session_refresh=s.last_session_refresh,
        broker_session_id=s.broker_session_id,
        broker_user_id=s.broker_user_id,
        state=UserSessionState(s.state),
        notes=dict(s.notes),
        client_sessions={k: _client(v) for k, v in s.client_sessions.items()},
        expires_at_ms=s.expires_at_ms,
    )


def _sessions(r: pb.ListUserSessionsResponse) -> list[UserSession]:
    return [_session(s) for s in r.sessions]


def _policy(p: pb.RealmPolicy) -> RealmPolicy:
    return RealmPolicy(
        realm=p.realm,
        sso_session_idle_timeout=p.sso_session_idle_timeout,
        sso_session_max_lifespan=p.sso_session_max_lifespan,
        sso_session_idle_timeout_remember_me=p.sso_session_idle_timeout_remember_me,
        sso_session_max_lifespan_remember_me=p.sso_session_max_lifespan_remember_me,
        remember_me=p.remember_me,
        client_session_idle_timeout=p.client_session_idle_timeout,
        client_session_max_lifespan=p.client_session_max_lifespan,
        offline_session_idle_timeout=p.offline_session_idle_timeout,
        offline_session_max_lifespan_enabled=p.offline_session_max_lifespan_enabled,
        offline_session_max_lifespan=p.offline_session_max_lifespan,
        client_offline_session_idle_timeout=p.client_offline_session_idle_timeout,
        client_offline_session_max_lifespan=p.client_offline_session_max_lifespan,
        clients={
            k: ClientPolicy(
                session_idle_timeout=v.session_idle_timeout,
                session_max_lifespan=v.session_max_lifespan,
                offline_session_idle_timeout=v.offline_session_idle_timeout,
                offline_session_max_lifespan=v.offline_session_max_lifespan,
            )
            for k, v in p.clients.items()
        },
    )


def _policy_to_proto(p: RealmPolicy) -> pb.RealmPolicy:
    return pb.RealmPolicy(
        realm=p.realm,
        sso_session_idle_timeout=p.sso_session_idle_timeout,
        sso_session_max_lifespan=p.sso_session_max_lifespan,
        sso_session_idle_timeout_remember_me=p.sso_session_idle_timeout_remember_me,
        sso_session_max_lifespan_remember_me=p.sso_session_max_lifespan_remember_me,
        remember_me=p.remember_me,
        client_session_idle_timeout=p.client_session_idle_timeout,
        client_session_max_lifespan=p.client_session_max_lifespan,
        offline_session_idle_timeout=p.offline_session_idle_timeout,
        offline_session_max_lifespan_enabled=p.offline_session_max_lifespan_enabled,
        offline_session_max_lifespan=p.offline_session_max_lifespan,
        client_offline_session_idle_timeout=p.client_offline_session_idle_timeout,
        client_offline_session_max_lifespan=p.client_offline_session_max_lifespan,
        clients={
            k: pb.ClientPolicy(
                session_idle_timeout=v.session_idle_timeout,
                session_max_lifespan=v.session_max_lifespan,
                offline_session_idle_timeout=v.offline_session_idle_timeout,
                offline_session_max_lifespan=v.offline_session_max_lifespan,
            )
            for k, v in p.clients.items()
        },
    )


class Operations:
    """Builders of every operation; both clients call these and carry the result over the wire."""

    @staticmethod
    def create_user_session(
        realm: str,
        user_id: str,
        *,
        session_id: str = "",
        login_username: str = "",
        ip_address: str = "",
        auth_method: str = "",
        remember_me: bool = False,
        broker_session_id: str = "",
        broker_user_id: str = "",
        state: UserSessionState = UserSessionState.UNSPECIFIED,
        notes: Mapping[str, str] | None = None,
    ) -> Operation[UserSession]:
        """Create a user session (not retried unless the server proves it did not run)."""
        return Operation(
            "CreateUserSession",
            pb.CreateUserSessionRequest(
                realm=realm,
                user_id=user_id,
                session_id=session_id,
                login_username=login_username,
                ip_address=ip_address,
                auth_method=auth_method,
                remember_me=remember_me,
                broker_session_id=broker_session_id,
                broker_user_id=broker_user_id,
                state=pb.UserSessionState.ValueType(int(state)),
                notes=dict(notes or {}),
            ),
            _session,
            idempotent=False,
        )

    @staticmethod
    def get_user_session(realm: str, session_id: str, *, offline: bool = False) -> Operation[UserSession]:
        """Get a live user session."""
        return Operation(
            "GetUserSession",
            pb.GetUserSessionRequest(realm=realm, session_id=session_id, offline=offline),
            _session,
        )

    @staticmethod
    def touch_user_session(
        realm: str,
        session_id: str,
        *,
        offline: bool = False,
        last_session_refresh: int = 0,
        client_ids: Iterable[str] = (),
    ) -> Operation[UserSession]:
        """Refresh a session and, optionally, some of its client sessions."""
        return Operation(
            "TouchUserSession",
            pb.TouchUserSessionRequest(
                realm=realm,
                session_id=session_id,
                offline=offline,
                last_session_refresh=last_session_refresh,
                client_ids=list(client_ids),
            ),
            _session,
        )

    @staticmethod
    def update_user_session(
        realm: str,
        session_id: str,
        *,
        offline: bool = False,
        set_notes: Mapping[str, str] | None = None,
        remove_notes: Iterable[str] = (),
        state: UserSessionState | None = None,
    ) -> Operation[UserSession]:
        """Set/remove notes and set the state."""
        request = pb.UpdateUserSessionRequest(
            realm=realm,
            session_id=session_id,
            offline=offline,
            set_notes=dict(set_notes or {}),
            remove_notes=list(remove_notes),
        )
        if state is not None:
            request.state = pb.UserSessionState.ValueType(int(state))
        return Operation("UpdateUserSession", request, _session)

    @staticmethod
    def remove_user_session(realm: str, session_id: str, *, offline: bool = False) -> Operation[bool]:
        """Remove (log out) one session; True when a live one was removed."""
        return Operation(
            "RemoveUserSession",
            pb.RemoveUserSessionRequest(realm=realm, session_id=session_id, offline=offline),
            lambda r: bool(r.removed),
        )

    @staticmethod
    def attach_client_session(
        realm: str,
        session_id: str,
        client_id: str,
        *,
        offline: bool = False,
        redirect_uri: str = "",
        action: str = "",
        protocol: str = "",
        notes: Mapping[str, str] | None = None,
    ) -> Operation[ClientSession]:
        """Attach (or replace) a client session."""
        return Operation(
            "AttachClientSession",
            pb.AttachClientSessionRequest(
                realm=realm,
                session_id=session_id,
                offline=offline,
                client_id=client_id,
                redirect_uri=redirect_uri,
                action=action,
                protocol=protocol,
                notes=dict(notes or {}),
            ),
            _client,
        )

    @staticmethod
    def get_client_session(
        realm: str, session_id: str, client_id: str, *, offline: bool = False
    ) -> Operation[ClientSession]:
        """Get a live client session."""
        return Operation(
            "GetClientSession",
            pb.GetClientSessionRequest(
                realm=realm, session_id=session_id, offline=offline, client_id=client_id
            ),
            _client,
        )

    @staticmethod
    def update_client_session(
        realm: str,
        session_id: str,
        client_id: str,
        *,
        offline: bool = False,
        redirect_uri: str | None = None,
        action: str | None = None,
        protocol: str | None = None,
        set_notes: Mapping[str, str] | None = None,
        remove_notes: Iterable[str] = (),
        timestamp: int = 0,
    ) -> Operation[ClientSession]:
        """Update a live client session."""
        request = pb.UpdateClientSessionRequest(
            realm=realm,
            session_id=session_id,
            offline=offline,
            client_id=client_id,
            set_notes=dict(set_notes or {}),
            remove_notes=list(remove_notes),
            timestamp=timestamp,
        )
        if redirect_uri is not None:
            request.redirect_uri = redirect_uri
        if action is not None:
            request.action = action
        if protocol is not None:
            request.protocol = protocol
        return Operation("UpdateClientSession", request, _client)

    @staticmethod
    def detach_client_session(
        realm: str, session_id: str, client_id: str, *, offline: bool = False
    ) -> Operation[bool]:
        """Remove one client session; True when a live one was removed."""
        return Operation(
            "DetachClientSession",
            pb.DetachClientSessionRequest(
                realm=realm, session_id=session_id, offline=offline, client_id=client_id
            ),
            lambda r: bool(r.removed),
        )

    @staticmethod
    def list_user_sessions(
        realm: str, user_id: str, *, offline: bool = False
    ) -> Operation[list[UserSession]]:
        """Every live session of a user."""
        return Operation(
            "ListUserSessions",
            pb.ListUserSessionsRequest(realm=realm, user_id=user_id, offline=offline),
            _sessions,
        )

    @staticmethod
    def remove_user_sessions(realm: str, user_id: str, *, offline: bool = False) -> Operation[int]:
        """Remove every session of a user; returns how many were live."""
        return Operation(
            "RemoveUserSessions",
            pb.RemoveUserSessionsRequest(realm=realm, user_id=user_id, offline=offline),
            lambda r: int(r.removed),
        )

    @staticmethod
    def count_sessions(realm: str, client_id: str = "", *, offline: bool = False) -> Operation[int]:
        """Live sessions of a realm or of one of its clients."""
        return Operation(
            "CountSessions",
            pb.CountSessionsRequest(realm=realm, client_id=client_id, offline=offline),
            lambda r: int(r.count),
        )

    @staticmethod
    def get_client_session_stats(realm: str, *, offline: bool = False) -> Operation[dict[str, int]]:
        """Live client sessions per client."""
        return Operation(
            "GetClientSessionStats",
            pb.GetClientSessionStatsRequest(realm=realm, offline=offline),
            lambda r: dict(r.counts),
        )

    @staticmethod
    def find_user_session_by_broker_session_id(realm: str, broker_session_id: str) -> Operation[UserSession]:
        """The first live online session with this broker session id."""
        return Operation(
            "FindUserSessionByBrokerSessionId",
            pb.FindUserSessionByBrokerSessionIdRequest(realm=realm, broker_session_id=broker_session_id),
            _session,
        )

    @staticmethod
    def find_user_sessions_by_broker_user_id(
        realm: str, broker_user_id: str, *, offline: bool = False
    ) -> Operation[list[UserSession]]:
        """Every live session with this broker user id."""
        return Operation(
            "FindUserSessionsByBrokerUserId",
            pb.FindUserSessionsByBrokerUserIdRequest(
                realm=realm, broker_user_id=broker_user_id, offline=offline
            ),
            _sessions,
        )

    @staticmethod
    def create_offline_session(
        realm: str, session_id: str, client_ids: Iterable[str] = ()
    ) -> Operation[UserSession]:
        """Copy an online session (and client sessions) into an offline one; create-or-update."""
        return Operation(
            "CreateOfflineSession",
            pb.CreateOfflineSessionRequest(realm=realm, session_id=session_id, client_ids=list(client_ids)),
            _session,
        )

    @staticmethod
    def set_realm_policy(policy: RealmPolicy) -> Operation[RealmPolicy]:
        """Store a realm's session policy."""
        return Operation("SetRealmPolicy", pb.SetRealmPolicyRequest(policy=_policy_to_proto(policy)), _policy)

    @staticmethod
    def get_realm_policy(realm: str) -> Operation[RealmPolicy]:
        """A realm's session policy."""
        return Operation("GetRealmPolicy", pb.GetRealmPolicyRequest(realm=realm), _policy)
