"""Authentication-session protos <-> model objects; every request field is validated on its way in."""

from __future__ import annotations

from session_store.model.auth_session import (
    AuthenticationSession,
    AuthenticationSessionUpdate,
    ExecutionStatus,
    RootAuthenticationSession,
    execution_status,
    validate_root_id,
    validate_tab_id,
)
from session_store.v1 import authentication_sessions_pb2 as pb


def root_id(value: str) -> str:
    """A validated root id with any `.route` suffix stripped."""
    return validate_root_id(value)


def tab_id(value: str) -> str:
    """A validated tab id."""
    return validate_tab_id(value)


def update_from_proto(req: pb.UpdateAuthenticationSessionRequest) -> AuthenticationSessionUpdate:
    """The validated changes of an update request (InvalidArgumentError names the bad field)."""
    return AuthenticationSessionUpdate(
        redirect_uri=req.redirect_uri if req.HasField("redirect_uri") else None,
        action=req.action if req.HasField("action") else None,
        protocol=req.protocol if req.HasField("protocol") else None,
        authenticated_user_id=req.authenticated_user_id if req.HasField("authenticated_user_id") else None,
        set_execution_status={
            k: execution_status(v, f"set_execution_status[{k[:40]}]")
            for k, v in req.set_execution_status.items()
        },
        clear_execution_status=tuple(req.clear_execution_status),
        add_required_actions=tuple(req.add_required_actions),
        remove_required_actions=tuple(req.remove_required_actions),
        client_scopes=tuple(req.client_scopes) if req.set_client_scopes else None,
        set_user_session_notes=dict(req.set_user_session_notes),
        remove_user_session_notes=tuple(req.remove_user_session_notes),
        set_auth_notes=dict(req.set_auth_notes),
        remove_auth_notes=tuple(req.remove_auth_notes),
        clear_auth_notes=req.clear_auth_notes,
        set_client_notes=dict(req.set_client_notes),
        remove_client_notes=tuple(req.remove_client_notes),
    )


def tab_to_proto(t: AuthenticationSession) -> pb.AuthenticationSession:
    """A tab as the wire has it."""
    return pb.AuthenticationSession(
        tab_id=t.tab_id,
        root_id=t.root_id,
        client_id=t.client_id,
        timestamp=t.timestamp,
        redirect_uri=t.redirect_uri,
        action=t.action,
        protocol=t.protocol,
        authenticated_user_id=t.authenticated_user_id,
        execution_status={k: pb.ExecutionStatus.ValueType(int(v)) for k, v in t.execution_status.items()},
        required_actions=list(t.required_actions),
        client_scopes=list(t.client_scopes),
        user_session_notes=dict(t.user_session_notes),
        auth_notes=dict(t.auth_notes),
        client_notes=dict(t.client_notes),
    )


def root_to_proto(r: RootAuthenticationSession) -> pb.RootAuthenticationSession:
    """A root as the wire has it."""
    return pb.RootAuthenticationSession(
        id=r.id,
        realm=r.realm,
        timestamp=r.timestamp,
        tabs={k: tab_to_proto(v) for k, v in r.tabs.items()},
        expires_at_ms=r.expires_at_ms,
    )


def tab_from_proto(t: pb.AuthenticationSession) -> AuthenticationSession:
    """A tab from the wire (sets sorted, as the server sends them)."""
    return AuthenticationSession(
        tab_id=t.tab_id,
        root_id=t.root_id,
        client_id=t.client_id,
        timestamp=t.timestamp,
        redirect_uri=t.redirect_uri,
        action=t.action,
        protocol=t.protocol,
        authenticated_user_id=t.authenticated_user_id,
        execution_status={k: ExecutionStatus(v) for k, v in t.execution_status.items()},
        required_actions=tuple(sorted(t.required_actions)),
        client_scopes=tuple(sorted(t.client_scopes)),
        user_session_notes=dict(t.user_session_notes),
        auth_notes=dict(t.auth_notes),
        client_notes=dict(t.client_notes),
    )


def root_from_proto(r: pb.RootAuthenticationSession) -> RootAuthenticationSession:
    """A root from the wire."""
    return RootAuthenticationSession(
        id=r.id,
        realm=r.realm,
        timestamp=r.timestamp,
        tabs={k: tab_from_proto(v) for k, v in r.tabs.items()},
        expires_at_ms=r.expires_at_ms,
    )
