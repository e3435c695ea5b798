"""Proto messages <-> model objects; every request field is validated on its way in."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from session_store.errors import InvalidArgumentError
from session_store.model.ids import normalize_session_id, validate_id
from session_store.model.limits import MAX_CLIENT_SESSIONS
from session_store.model.login_failure import LoginFailure
from session_store.model.policy import BruteForcePolicy, BruteForceStrategy, ClientPolicy, RealmPolicy
from session_store.model.session import (
    ClientSession,
    LimitBehavior,
    NewClientSession,
    NewUserSession,
    RefreshToken,
    RefreshTokenUse,
    SessionLimits,
    UserSession,
    UserSessionState,
    validate_note_names,
    validate_notes,
    validate_redirect_uri,
    validate_text,
)
from session_store.model.single_use import SingleUseObject, validate_lifespan, validate_single_use_key
from session_store.v1 import login_failures_pb2 as lf_pb
from session_store.v1 import session_store_pb2 as pb
from session_store.v1 import single_use_objects_pb2 as su_pb


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


def limits(req: pb.CreateUserSessionRequest | pb.AttachClientSessionRequest) -> SessionLimits | None:
    """The validated session limits of a create or attach request (None when absent or all off).

    For an attach the limited client is the attached one: `limits.client_id` must be empty or name it,
    and limits need an online session.
    """
    if not req.HasField("limits"):
        return None
    msg = req.limits
    try:
        behavior = LimitBehavior(msg.behavior)
    except ValueError:
        raise InvalidArgumentError(f"limits.behavior {msg.behavior} is not a known behaviour") from None
    client = msg.client_id
    if isinstance(req, pb.AttachClientSessionRequest):
        if client and client != req.client_id:
            raise InvalidArgumentError("limits.client_id must be empty or the attached client_id")
        client = req.client_id
        if req.offline and msg.client_limit > 0:
            raise InvalidArgumentError("session limits apply to online sessions only")
    result = SessionLimits(
        realm_limit=msg.realm_limit, client_limit=msg.client_limit, client_id=client, behavior=behavior
    )
    return result if result.enabled else None


def refresh_token(req: pb.UseRefreshTokenRequest) -> RefreshToken:
    """The validated refresh token of a UseRefreshToken request."""
    return RefreshToken(
        client_id=req.client_id,
        token_id=req.token_id,
        reuse_id=req.reuse_id,
        issued_at=req.issued_at,
    )


def refresh_token_use_to_proto(u: RefreshTokenUse) -> pb.UseRefreshTokenResponse:
    """A refresh token use as the wire has it."""
    return pb.UseRefreshTokenResponse(use_count=u.use_count, client_session=client_to_proto(u.client_session))


def refresh_token_use_from_proto(r: pb.UseRefreshTokenResponse) -> RefreshTokenUse:
    """A refresh token use from the wire."""
    return RefreshTokenUse(use_count=r.use_count, client_session=client_from_proto(r.client_session))


def limits_to_proto(value: SessionLimits) -> pb.SessionLimits:
    """Session limits as the wire has them."""
    return pb.SessionLimits(
        realm_limit=value.realm_limit,
        client_limit=value.client_limit,
        client_id=value.client_id,
        behavior=pb.LimitBehavior.ValueType(int(value.behavior)),
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
        evicted_session_ids=list(c.evicted_session_ids),
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
        evicted_session_ids=list(s.evicted_session_ids),
    )


def _scalars(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The scalar fields of a policy dataclass or message, by the names both share."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in skip}


def _scalars_of_message(message: Any, cls: type[Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {f.name: getattr(message, f.name) for f in dataclasses.fields(cls) if f.name not in skip}


def policy_from_proto(p: pb.RealmPolicy) -> RealmPolicy:
    """A validated realm policy (InvalidArgumentError names the offending field)."""
    realm(p.realm)
    brute = _scalars_of_message(p.brute_force, BruteForcePolicy, ("strategy",))
    try:
        strategy = BruteForceStrategy(p.brute_force.strategy)
    except ValueError:
        raise InvalidArgumentError(f"brute_force.strategy: unknown value {p.brute_force.strategy}") from None
    return RealmPolicy(
        **_scalars_of_message(p, RealmPolicy, ("clients", "brute_force")),
        clients={k: ClientPolicy(**_scalars_of_message(v, ClientPolicy)) for k, v in p.clients.items()},
        brute_force=BruteForcePolicy(**brute, strategy=strategy),
    )


def policy_to_proto(p: RealmPolicy) -> pb.RealmPolicy:
    """A realm policy as the wire has it."""
    return pb.RealmPolicy(
        **_scalars(p, ("clients", "brute_force")),
        clients={k: pb.ClientPolicy(**_scalars(v)) for k, v in p.clients.items()},
        brute_force=pb.BruteForcePolicy(**_scalars(p.brute_force)),
    )


def client_from_proto(c: pb.ClientSession) -> ClientSession:
    """A client session from the wire."""
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
        evicted_session_ids=tuple(c.evicted_session_ids),
    )


def session_from_proto(s: pb.UserSession) -> UserSession:
    """A user session from the wire."""
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
        client_sessions={k: client_from_proto(v) for k, v in s.client_sessions.items()},
        expires_at_ms=s.expires_at_ms,
        evicted_session_ids=tuple(s.evicted_session_ids),
    )


def single_use_key(value: str) -> str:
    """A validated single-use object key."""
    return validate_single_use_key(value)


def lifespan(value: int) -> int:
    """A validated single-use object lifespan, seconds (> 0)."""
    return validate_lifespan(value)


def single_use_notes(notes: Mapping[str, str]) -> dict[str, str]:
    """Validated single-use object notes (the limits of session notes)."""
    return dict(validate_notes(dict(notes)))


def ip_address(value: str) -> str:
    """A validated IP address field (free text; empty allowed)."""
    return validate_text(value, "ip_address")


def single_use_to_proto(o: SingleUseObject) -> su_pb.SingleUseObject:
    """A single-use object as the wire has it."""
    return su_pb.SingleUseObject(key=o.key, notes=dict(o.notes), expires_at_ms=o.expires_at_ms)


def single_use_from_proto(o: su_pb.SingleUseObject) -> SingleUseObject:
    """A single-use object from the wire."""
    return SingleUseObject(key=o.key, notes=dict(o.notes), expires_at_ms=o.expires_at_ms)


def login_failure_to_proto(f: LoginFailure) -> lf_pb.LoginFailure:
    """A login-failure record as the wire has it."""
    return lf_pb.LoginFailure(**_scalars(f))


def login_failure_from_proto(f: lf_pb.LoginFailure) -> LoginFailure:
    """A login-failure record from the wire."""
    return LoginFailure(**_scalars_of_message(f, LoginFailure))
