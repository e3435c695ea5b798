"""Proto messages <-> model objects; every request field is validated on its way in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from session_store.errors import InvalidArgumentError
from session_store.model.ids import normalize_session_id, validate_id
from session_store.model.limits import MAX_CLIENT_SESSIONS
from session_store.model.policy import ClientPolicy, RealmPolicy
from session_store.model.session import (
    ClientSession,
    NewClientSession,
    NewUserSession,
    UserSession,
    UserSessionState,
    validate_note_names,
    validate_notes,
    validate_redirect_uri,
    validate_text,
)
from session_store.v1 import session_store_pb2 as pb


def realm(value: str) -> str:
    """A validated realm id."""
    return validate_id(value, "realm")


def user_id(value: str) -> str:
    """A validated user id."""
    return validate_id(value, "user_id")


def client_id(value: str) -> str:
    """A validated client id."""
    return validate_id(value, "client_id")


def session_id(value: str) -> str:
    """A validated session id with any `.route` suffix stripped."""
    return normalize_session_id(value)


def client_ids(values: Iterable[str]) -> list[str]:
    """A validated, bounded list of client ids (duplicates dropped, order kept)."""
    result = list(dict.fromkeys(values))
    if len(result) > MAX_CLIENT_SESSIONS:
        raise InvalidArgumentError(f"client_ids: at most {MAX_CLIENT_SESSIONS}")
    return [client_id(c) for c in result]


def state(value: int) -> UserSessionState:
    """A known user-session state."""
    try:
        return UserSessionState(value)
    except ValueError:
        raise InvalidArgumentError(f"state {value} is not a known user session state") from None


def timestamp(value: int, what: str) -> int:
    """A non-negative epoch-seconds value (0 = unset)."""
    if value < 0:
        raise InvalidArgumentError(f"{what} must not be negative")
    return value


def new_user_session(req: pb.CreateUserSessionRequest) -> NewUserSession:
    """The validated content of a create request."""
    return NewUserSession(
        realm=realm(req.realm),
        user_id=user_id(req.user_id),
        login_username=validate_text(req.login_username, "login_username"),
        ip_address=validate_text(req.ip_address, "ip_address"),
        auth_method=validate_text(req.auth_method, "auth_method"),
        remember_me=req.remember_me,
        broker_session_id=validate_text(req.broker_session_id, "broker_session_id"),
        broker_user_id=validate_text(req.broker_user_id, "broker_user_id"),
        state=state(req.state),
        notes=validate_notes(dict(req.notes)),
    )


def new_client_session(req: pb.AttachClientSessionRequest) -> NewClientSession:
    """The validated content of an attach request."""
    return NewClientSession(
        client_id=client_id(req.client_id),
        redirect_uri=validate_redirect_uri(req.redirect_uri),
        action=validate_text(req.action, "action"),
        protocol=validate_text(req.protocol, "protocol"),
        notes=validate_notes(dict(req.notes)),
    )


def notes_change(set_notes: Mapping[str, str], remove: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Validated notes to set and names to remove."""
    return dict(validate_notes(dict(set_notes), "set_notes")), validate_note_names(remove)


def client_to_proto(c: ClientSession) -> pb.ClientSession:
    """A client session as the wire has it."""
    return pb.ClientSession(
        client_id=c.client_id,
        redirect_uri=c.redirect_uri,
        action=c.action,
        protocol=c.protocol,
        timestamp=c.timestamp,
        started=c.started,
        user_session_started=c.user_session_started,
        notes=dict(c.notes),
        expires_at_ms=c.expires_at_ms,
        user_session_id=c.user_session_id,
        offline=c.offline,
    )


def session_to_proto(s: UserSession) -> pb.UserSession:
    """A user session as the wire has it."""
    return pb.UserSession(
        id=s.id,
        realm=s.realm,
        user_id=s.user_id,
        login_username=s.login_username,
        ip_address=s.ip_address,
        auth_method=s.auth_method,
        remember_me=s.remember_me,
        started=s.started,
        last_session_refresh=s.last_session_refresh,
        broker_session_id=s.broker_session_id,
        broker_user_id=s.broker_user_id,
        state=pb.UserSessionState.ValueType(int(s.state)),
        offline=s.offline,
        notes=dict(s.notes),
        client_sessions={k: client_to_proto(v) for k, v in s.client_sessions.items()},
        expires_at_ms=s.expires_at_ms,
    )


def policy_from_proto(p: pb.RealmPolicy) -> RealmPolicy:
    """A validated realm policy."""
    return RealmPolicy(
        realm=realm(p.realm),
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


def policy_to_proto(p: RealmPolicy) -> pb.RealmPolicy:
    """A realm policy as the wire has it."""
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
