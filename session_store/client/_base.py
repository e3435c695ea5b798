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

from session_store.api import convert, convert_auth, convert_tokens
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
from session_store.model.auth_session import (
    AuthenticationSession,
    AuthenticationSessionRemoval,
    ExecutionStatus,
    RootAuthenticationSession,
)
from session_store.model.login_failure import LoginFailure
from session_store.model.policy import RealmPolicy
from session_store.model.session import (
    ClientSession,
    RefreshTokenUse,
    RemovalProgress,
    SessionLimits,
    UserSession,
    UserSessionState,
)
from session_store.model.single_use import SingleUseObject
from session_store.model.token import TokenKind, ValidatedToken
from session_store.v1 import authentication_sessions_pb2 as as_pb
from session_store.v1 import cluster_pb2 as cl_pb
from session_store.v1 import login_failures_pb2 as lf_pb
from session_store.v1 import session_store_pb2 as pb
from session_store.v1 import single_use_objects_pb2 as su_pb
from session_store.v1 import tokens_pb2 as tk_pb

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_BACKOFF_SECONDS = 0.05
REMOVAL_TIMEOUT_SECONDS = 600.0
_AUTH_SESSIONS = "AuthenticationSessions"
_SINGLE_USE = "SingleUseObjects"
_LOGIN_FAILURES = "LoginFailures"
_TOKENS = "TokenValidation"
_CLUSTER = "ClusterAdmin"
MOVE_TIMEOUT_SECONDS = 24 * 3600.0
"""A shard move streams progress for as long as it takes (rate-limited: minutes for big stores)."""


@dataclass(frozen=True)
class ShardInfo:
    """One shard in `ClusterTopology`: name, URL without credentials, weight, partitions, keys (-1: down)."""

    name: str
    url: str
    weight: int
    partitions: int
    keys: int


@dataclass(frozen=True)
class ClusterTopology:
    """The partition map in force (its epoch and shards) and the move plan in progress (empty id: none)."""

    epoch: int
    shards: tuple[ShardInfo, ...]
    plan_id: str
    plan_moves: int
    plan_done: int


@dataclass(frozen=True)
class MoveReport:
    """Progress of a shard move; `done` on the last report."""

    moved: int
    total: int
    keys_copied: int
    keys_per_second: float
    elapsed_seconds: float
    eta_seconds: float
    pause_p99_ms: float
    epoch: int
    done: bool


_BY_CODE: dict[grpc.StatusCode, type[SessionStoreError]] = {
    grpc.StatusCode.NOT_FOUND: SessionNotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: SessionExistsError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
    # A server shutting down kills the calls its core has received but not yet handed to a handler
    # with CANCELLED (seen in tests/integration/test_rollout.py); a cancel of our own raises
    # asyncio.CancelledError instead. Idempotent calls retry it; creates cannot know it did not run.
    grpc.StatusCode.CANCELLED: UnavailableError,
}
_NOT_EXECUTED = (PartitionMovedError, PartitionFrozenError)
"""Errors that prove the call did not run: always safe to retry."""


@dataclass(frozen=True)
class Operation(Generic[T]):
    """One RPC: method name, request, reply conversion, whether retrying it is safe, and the service.

    `service` names the gRPC service (without the package) whose stub carries the call: both
    clients keep one stub per service of session_store.v1.
    """

    method: str
    request: Any
    convert: Callable[[Any], T]
    idempotent: bool = True
    service: str = "SessionStore"


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


_client = convert.client_from_proto
_session = convert.session_from_proto
_policy = convert.policy_from_proto
_policy_to_proto = convert.policy_to_proto


def _sessions(r: pb.ListUserSessionsResponse) -> list[UserSession]:
    return [_session(s) for s in r.sessions]


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
        limits: SessionLimits | None = None,
    ) -> Operation[UserSession]:
        """Create a user session (not retried unless the server proves it did not run).

        With `limits`, the user-session count limiter applies atomically: SessionLimitExceededError
        when it denies, else the session's `evicted_session_ids` name the sessions it terminated.
        """
        request = pb.CreateUserSessionRequest(
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
        )
        if limits is not None:
            request.limits.CopyFrom(convert.limits_to_proto(limits))
        return Operation("CreateUserSession", request, _session, idempotent=False)

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
    def remove_user_session(
        realm: str, session_id: str, *, offline: bool = False, revoked_by_admin: bool = False
    ) -> Operation[bool]:
        """Remove (log out) one session; True when a live one was removed.

        Its event is `logged_out`, or `revoked` (reason admin) with `revoked_by_admin`.
        """
        return Operation(
            "RemoveUserSession",
            pb.RemoveUserSessionRequest(
                realm=realm, session_id=session_id, offline=offline, revoked_by_admin=revoked_by_admin
            ),
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
        limits: SessionLimits | None = None,
    ) -> Operation[ClientSession]:
        """Attach (or replace) a client session.

        With `limits` (online sessions only), a client session new to this session counts against
        the client limit among the user's other sessions: SessionLimitExceededError when it denies,
        else the result's `evicted_session_ids` name the sessions it terminated.
        """
        request = pb.AttachClientSessionRequest(
            realm=realm,
            session_id=session_id,
            offline=offline,
            client_id=client_id,
            redirect_uri=redirect_uri,
            action=action,
            protocol=protocol,
            notes=dict(notes or {}),
        )
        if limits is not None:
            request.limits.CopyFrom(convert.limits_to_proto(limits))
        return Operation("AttachClientSession", request, _client)

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
    def use_refresh_token(
        realm: str,
        session_id: str,
        client_id: str,
        token_id: str,
        *,
        issued_at: int,
        reuse_id: str = "",
        new_issued_at: int = 0,
        introspect: bool = False,
        offline: bool = False,
    ) -> Operation[RefreshTokenUse]:
        """Check and record one use of a refresh token (Keycloak rotation); never retried.

        Raises StaleRefreshTokenError or RefreshTokenReuseError when rotation rejects the token (a
        refresh then detached the client session), SessionNotFoundError when the user or client
        session is gone.
        """
        return Operation(
            "UseRefreshToken",
            pb.UseRefreshTokenRequest(
                realm=realm,
                session_id=session_id,
                offline=offline,
                client_id=client_id,
                token_id=token_id,
                reuse_id=reuse_id,
                issued_at=issued_at,
                new_issued_at=new_issued_at,
                introspect=introspect,
            ),
            convert.refresh_token_use_from_proto,
            idempotent=introspect,
        )

    @staticmethod
    def set_realm_policy(policy: RealmPolicy) -> Operation[RealmPolicy]:
        """Store a realm's session policy."""
        return Operation("SetRealmPolicy", pb.SetRealmPolicyRequest(policy=_policy_to_proto(policy)), _policy)

    @staticmethod
    def get_realm_policy(realm: str) -> Operation[RealmPolicy]:
        """A realm's session policy."""
        return Operation("GetRealmPolicy", pb.GetRealmPolicyRequest(realm=realm), _policy)

    @staticmethod
    def get_or_create_root_authentication_session(
        realm: str, root_id: str = ""
    ) -> Operation[RootAuthenticationSession]:
        """The live root with `root_id`, else a new one with it (empty: a minted id); atomic.

        With an empty id it is not retried unless the server proves it did not run (a repeat would
        mint a second root).
        """
        return Operation(
            "GetOrCreateRootAuthenticationSession",
            as_pb.GetOrCreateRootAuthenticationSessionRequest(realm=realm, root_id=root_id),
            convert_auth.root_from_proto,
            idempotent=bool(root_id),
            service=_AUTH_SESSIONS,
        )

    @staticmethod
    def get_root_authentication_session(realm: str, root_id: str) -> Operation[RootAuthenticationSession]:
        """A live root with its tabs (SessionNotFoundError when missing or expired)."""
        return Operation(
            "GetRootAuthenticationSession",
            as_pb.GetRootAuthenticationSessionRequest(realm=realm, root_id=root_id),
            convert_auth.root_from_proto,
            service=_AUTH_SESSIONS,
        )

    @staticmethod
    def remove_root_authentication_session(realm: str, root_id: str) -> Operation[bool]:
        """Remove a root and its tabs; True when a live root was removed."""
        return Operation(
            "RemoveRootAuthenticationSession",
            as_pb.RemoveRootAuthenticationSessionRequest(realm=realm, root_id=root_id),
            lambda r: bool(r.removed),
            service=_AUTH_SESSIONS,
        )

    @staticmethod
    def restart_root_authentication_session(realm: str, root_id: str) -> Operation[RootAuthenticationSession]:
        """Remove every tab of a live root and set its timestamp to now (same id)."""
        return Operation(
            "RestartRootAuthenticationSession",
            as_pb.RestartRootAuthenticationSessionRequest(realm=realm, root_id=root_id),
            convert_auth.root_from_proto,
            service=_AUTH_SESSIONS,
        )

    @staticmethod
    def create_authentication_session(
        realm: str, root_id: str, client_id: str
    ) -> Operation[AuthenticationSession]:
        """Create a tab for a client (at the realm's tab limit the oldest tab is evicted first).

        Not retried unless the server proves it did not run (a repeat would create a second tab).
        """
        return Operation(
            "CreateAuthenticationSession",
            as_pb.CreateAuthenticationSessionRequest(realm=realm, root_id=root_id, client_id=client_id),
            convert_auth.tab_from_proto,
            idempotent=False,
            service=_AUTH_SESSIONS,
        )

    @staticmethod
    def get_authentication_session(
        realm: str, root_id: str, tab_id: str, client_id: str
    ) -> Operation[AuthenticationSession]:
        """A tab of a live root (SessionNotFoundError also when it is another client's)."""
        return Operation(
            "GetAuthenticationSession",
            as_pb.GetAuthenticationSessionRequest(
                realm=realm, root_id=root_id, tab_id=tab_id, client_id=client_id
            ),
            convert_auth.tab_from_proto,
            service=_AUTH_SESSIONS,
        )

    @staticmethod
    def update_authentication_session(
        realm: str,
        root_id: str,
        tab_id: str,
        client_id: str,
        *,
        redirect_uri: str | None = None,
        action: str | None = None,
        protocol: str | None = None,
        authenticated_user_id: str | None = None,
        set_execution_status: Mapping[str, ExecutionStatus] | None = None,
        clear_execution_status: Iterable[str] = (),
        add_required_actions: Iterable[str] = (),
        remove_required_actions: Iterable[str] = (),
        client_scopes: Iterable[str] | None = None,
        set_user_session_notes: Mapping[str, str] | None = None,
        remove_user_session_notes: Iterable[str] = (),
        set_auth_notes: Mapping[str, str] | None = None,
        remove_auth_notes: Iterable[str] = (),
        clear_auth_notes: bool = False,
        set_client_notes: Mapping[str, str] | None = None,
        remove_client_notes: Iterable[str] = (),
    ) -> Operation[AuthenticationSession]:
        """Change a tab in one step (None: unchanged; `authenticated_user_id=""` clears the user;
        `client_scopes` replaces the scopes). The root's timestamp becomes now."""
        request = as_pb.UpdateAuthenticationSessionRequest(
            realm=realm,
            root_id=root_id,
            tab_id=tab_id,
            client_id=client_id,
            set_execution_status={
                k: as_pb.ExecutionStatus.ValueType(int(v)) for k, v in (set_execution_status or {}).items()
            },
            clear_execution_status=list(clear_execution_status),
            add_required_actions=list(add_required_actions),
            remove_required_actions=list(remove_required_actions),
            set_client_scopes=client_scopes is not None,
            client_scopes=list(client_scopes or ()),
            set_user_session_notes=dict(set_user_session_notes or {}),
            remove_user_session_notes=list(remove_user_session_notes),
            set_auth_notes=dict(set_auth_notes or {}),
            remove_auth_notes=list(remove_auth_notes),
            clear_auth_notes=clear_auth_notes,
            set_client_notes=dict(set_client_notes or {}),
            remove_client_notes=list(remove_client_notes),
        )
        for name, value in (
            ("redirect_uri", redirect_uri),
            ("action", action),
            ("protocol", protocol),
            ("authenticated_user_id", authenticated_user_id),
        ):
            if value is not None:
                setattr(request, name, value)
        return Operation(
            "UpdateAuthenticationSession", request, convert_auth.tab_from_proto, service=_AUTH_SESSIONS
        )

    @staticmethod
    def remove_authentication_session(
        realm: str, root_id: str, tab_id: str
    ) -> Operation[AuthenticationSessionRemoval]:
        """Remove a tab; removing the last tab removes the root."""
        return Operation(
            "RemoveAuthenticationSession",
            as_pb.RemoveAuthenticationSessionRequest(realm=realm, root_id=root_id, tab_id=tab_id),
            lambda r: AuthenticationSessionRemoval(removed=r.removed, root_removed=r.root_removed),
            service=_AUTH_SESSIONS,
        )

    @staticmethod
    def put_single_use_object(
        realm: str, key: str, lifespan_seconds: int, notes: Mapping[str, str] | None = None
    ) -> Operation[None]:
        """Store or overwrite a single-use object for at least `lifespan_seconds` (> 0)."""
        return Operation(
            "PutSingleUseObject",
            su_pb.PutSingleUseObjectRequest(
                realm=realm, key=key, lifespan_seconds=lifespan_seconds, notes=dict(notes or {})
            ),
            lambda r: None,
            service=_SINGLE_USE,
        )

    @staticmethod
    def put_single_use_object_if_absent(realm: str, key: str, lifespan_seconds: int) -> Operation[bool]:
        """Store a single-use object with empty notes unless one is there; True when this call stored it.

        Not retried unless the server proves it did not run (a repeat would answer False).
        """
        return Operation(
            "PutSingleUseObjectIfAbsent",
            su_pb.PutSingleUseObjectRequest(realm=realm, key=key, lifespan_seconds=lifespan_seconds),
            lambda r: bool(r.stored),
            idempotent=False,
            service=_SINGLE_USE,
        )

    @staticmethod
    def get_single_use_object(realm: str, key: str) -> Operation[SingleUseObject]:
        """A live single-use object (SessionNotFoundError when absent or expired)."""
        return Operation(
            "GetSingleUseObject",
            su_pb.SingleUseObjectKey(realm=realm, key=key),
            convert.single_use_from_proto,
            service=_SINGLE_USE,
        )

    @staticmethod
    def take_single_use_object(realm: str, key: str) -> Operation[SingleUseObject]:
        """Remove a single-use object and return it; of racing callers, the others get SessionNotFoundError.

        Not retried unless the server proves it did not run (a repeat would find nothing).
        """
        return Operation(
            "TakeSingleUseObject",
            su_pb.SingleUseObjectKey(realm=realm, key=key),
            convert.single_use_from_proto,
            idempotent=False,
            service=_SINGLE_USE,
        )

    @staticmethod
    def replace_single_use_object(
        realm: str, key: str, notes: Mapping[str, str] | None = None
    ) -> Operation[bool]:
        """Replace the notes of a live single-use object, keeping its expiry; False when absent."""
        return Operation(
            "ReplaceSingleUseObject",
            su_pb.ReplaceSingleUseObjectRequest(realm=realm, key=key, notes=dict(notes or {})),
            lambda r: bool(r.replaced),
            service=_SINGLE_USE,
        )

    @staticmethod
    def contains_single_use_object(realm: str, key: str) -> Operation[bool]:
        """Whether a live single-use object is under the key."""
        return Operation(
            "ContainsSingleUseObject",
            su_pb.SingleUseObjectKey(realm=realm, key=key),
            lambda r: bool(r.present),
            service=_SINGLE_USE,
        )

    @staticmethod
    def record_login_failure(realm: str, user_id: str, *, ip_address: str = "") -> Operation[LoginFailure]:
        """Record one failed login and apply the realm's brute-force rules; returns the record.

        Not retried unless the server proves it did not run (a repeat would count twice).
        """
        return Operation(
            "RecordLoginFailure",
            lf_pb.RecordLoginFailureRequest(realm=realm, user_id=user_id, ip_address=ip_address),
            convert.login_failure_from_proto,
            idempotent=False,
            service=_LOGIN_FAILURES,
        )

    @staticmethod
    def get_login_failure(realm: str, user_id: str) -> Operation[LoginFailure]:
        """A user's login-failure record (SessionNotFoundError when there is none)."""
        return Operation(
            "GetLoginFailure",
            lf_pb.LoginFailureKey(realm=realm, user_id=user_id),
            convert.login_failure_from_proto,
            service=_LOGIN_FAILURES,
        )

    @staticmethod
    def clear_login_failure(realm: str, user_id: str) -> Operation[bool]:
        """A successful login: reset the user's counters; True when there was a record."""
        return Operation(
            "ClearLoginFailure",
            lf_pb.LoginFailureKey(realm=realm, user_id=user_id),
            lambda r: bool(r.removed),
            service=_LOGIN_FAILURES,
        )

    @staticmethod
    def remove_login_failure(realm: str, user_id: str) -> Operation[bool]:
        """Delete a user's record (the user was removed); True when there was one."""
        return Operation(
            "RemoveLoginFailure",
            lf_pb.LoginFailureKey(realm=realm, user_id=user_id),
            lambda r: bool(r.removed),
            service=_LOGIN_FAILURES,
        )

    @staticmethod
    def remove_realm_login_failures(realm: str) -> Operation[int]:
        """Delete every login-failure record of a realm; returns how many were removed."""
        return Operation(
            "RemoveRealmLoginFailures",
            lf_pb.RemoveRealmLoginFailuresRequest(realm=realm),
            lambda r: int(r.removed),
            service=_LOGIN_FAILURES,
        )

    @staticmethod
    def get_topology() -> Operation[ClusterTopology]:
        """The partition map in force, every shard with its partitions and keys, and any move plan."""
        return Operation("GetTopology", cl_pb.GetTopologyRequest(), _topology, service=_CLUSTER)

    @staticmethod
    def validate_token(
        realm: str,
        token: str,
        *,
        audience: str = "",
        kind: TokenKind = TokenKind.UNSPECIFIED,
        require_client_session: bool = False,
    ) -> Operation[ValidatedToken]:
        """Validate an access, refresh or offline token of a realm; returns its minimal claims.

        The signature is checked against the realm's keys, then `iss`, `aud` (`audience`, else the
        realm's), `typ` (`kind`; REFRESH also accepts offline tokens), `exp`/`nbf`/`iat`, and finally
        that its session (and, for refresh tokens or with `require_client_session`, its client session
        for `azp`) is live. Raises InvalidTokenError (TokenExpiredError when expired) for a bad token,
        SessionNotActiveError when its session is not live.
        """
        return Operation(
            "ValidateToken",
            tk_pb.ValidateTokenRequest(
                realm=realm,
                token=token,
                audience=audience,
                kind=tk_pb.TokenKind.ValueType(int(kind)),
                require_client_session=require_client_session,
            ),
            convert_tokens.validated_from_proto,
            service=_TOKENS,
        )


def _topology(reply: cl_pb.Topology) -> ClusterTopology:
    return ClusterTopology(
        epoch=reply.epoch,
        shards=tuple(ShardInfo(s.name, s.url, s.weight, s.partitions, s.keys) for s in reply.shards),
        plan_id=reply.plan_id,
        plan_moves=reply.plan_moves,
        plan_done=reply.plan_done,
    )


def move_report(reply: cl_pb.MoveProgress) -> MoveReport:
    """A progress message of a shard move."""
    return MoveReport(
        reply.moved,
        reply.total,
        reply.keys_copied,
        reply.keys_per_second,
        reply.elapsed_seconds,
        reply.eta_seconds,
        reply.pause_p99_ms,
        reply.epoch,
        reply.done,
    )


def move_request(
    method: str, target: str = "", *, name: str = "", weight: int = 0, partitions_per_second: float = 0.0
) -> Any:
    """The request of AddShard (`target` = URL), RemoveShard (`target` = shard name) or ResumeMove."""
    if method == "AddShard":
        return cl_pb.AddShardRequest(
            url=target, name=name, weight=weight, partitions_per_second=partitions_per_second
        )
    if method == "RemoveShard":
        return cl_pb.RemoveShardRequest(shard=target, partitions_per_second=partitions_per_second)
    return cl_pb.ResumeMoveRequest(partitions_per_second=partitions_per_second)


def remove_sessions_request(
    realm: str, *, client_id: str = "", expired: bool = False, batch_size: int = 0
) -> pb.RemoveSessionsRequest:
    """The request of a bulk removal: the whole realm, one client's client sessions, or the expired."""
    if client_id:
        return pb.RemoveSessionsRequest(realm=realm, client_id=client_id, batch_size=batch_size)
    if expired:
        return pb.RemoveSessionsRequest(realm=realm, expired=True, batch_size=batch_size)
    return pb.RemoveSessionsRequest(realm=realm, all=True, batch_size=batch_size)


def removal_progress(reply: pb.RemoveSessionsProgress) -> RemovalProgress:
    """A progress message of a bulk removal."""
    return RemovalProgress(reply.removed, reply.partitions_done, reply.partitions_total)
