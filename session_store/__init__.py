"""session-store: a clustered session store for Keycloak-like identity servers.

The public surface: the clients, the error tree, the settings, the session value objects and the
session events a watch delivers.
"""

from __future__ import annotations

from session_store.client import AsyncSessionStoreClient, SessionStoreClient
from session_store.config import Settings
from session_store.errors import (
    EventsTrimmedError,
    InvalidArgumentError,
    LimitExceededError,
    PartitionFrozenError,
    PartitionMovedError,
    PermissionDeniedError,
    PreconditionFailedError,
    RefreshTokenReuseError,
    SessionExistsError,
    SessionLimitExceededError,
    SessionNotFoundError,
    SessionStoreError,
    ShardUnavailableError,
    StaleRefreshTokenError,
    UnauthenticatedError,
    UnavailableError,
)
from session_store.events.stream import EventType, SessionEvent
from session_store.model.auth_session import (
    AuthenticationSession,
    AuthenticationSessionRemoval,
    ExecutionStatus,
    RootAuthenticationSession,
)
from session_store.model.login_failure import LoginFailure
from session_store.model.policy import BruteForcePolicy, BruteForceStrategy, ClientPolicy, RealmPolicy
from session_store.model.session import (
    ClientSession,
    LimitBehavior,
    RefreshTokenUse,
    SessionLimits,
    UserSession,
    UserSessionState,
)
from session_store.model.single_use import SingleUseObject

__all__ = [
    "AsyncSessionStoreClient",
    "AuthenticationSession",
    "AuthenticationSessionRemoval",
    "BruteForcePolicy",
    "BruteForceStrategy",
    "ClientPolicy",
    "ClientSession",
    "EventType",
    "EventsTrimmedError",
    "ExecutionStatus",
    "InvalidArgumentError",
    "LimitBehavior",
    "LimitExceededError",
    "LoginFailure",
    "PartitionFrozenError",
    "PartitionMovedError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "RealmPolicy",
    "RefreshTokenReuseError",
    "RefreshTokenUse",
    "RootAuthenticationSession",
    "SessionEvent",
    "SessionExistsError",
    "SessionLimitExceededError",
    "SessionLimits",
    "SessionNotFoundError",
    "SessionStoreClient",
    "SessionStoreError",
    "Settings",
    "ShardUnavailableError",
    "SingleUseObject",
    "StaleRefreshTokenError",
    "UnauthenticatedError",
    "UnavailableError",
    "UserSession",
    "UserSessionState",
]
