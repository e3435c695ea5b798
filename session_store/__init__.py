"""session-store: a clustered session store for Keycloak-like identity servers.

The public surface: the clients, the error tree, the settings, the session value objects and the
session events a watch delivers.
"""

from __future__ import annotations

from session_store.client import AsyncSessionStoreClient, ClientTLS, SessionStoreClient
from session_store.config import Settings
from session_store.errors import (
    EventsTrimmedError,
    InvalidArgumentError,
    InvalidTokenError,
    LimitExceededError,
    PartitionFrozenError,
    PartitionMovedError,
    PermissionDeniedError,
    PreconditionFailedError,
    RefreshTokenReuseError,
    SessionExistsError,
    SessionLimitExceededError,
    SessionNotActiveError,
    SessionNotFoundError,
    SessionStoreError,
    ShardUnavailableError,
    StaleRefreshTokenError,
    StoreMemoryLowError,
    TokenExpiredError,
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
from session_store.model.token import TokenKind, ValidatedToken

__all__ = [
    "AsyncSessionStoreClient",
    "AuthenticationSession",
    "AuthenticationSessionRemoval",
    "BruteForcePolicy",
    "BruteForceStrategy",
    "ClientPolicy",
    "ClientSession",
    "ClientTLS",
    "EventType",
    "EventsTrimmedError",
    "ExecutionStatus",
    "InvalidArgumentError",
    "InvalidTokenError",
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
    "SessionNotActiveError",
    "SessionNotFoundError",
    "SessionStoreClient",
    "SessionStoreError",
    "Settings",
    "ShardUnavailableError",
    "SingleUseObject",
    "StaleRefreshTokenError",
    "StoreMemoryLowError",
    "TokenExpiredError",
    "TokenKind",
    "UnauthenticatedError",
    "UnavailableError",
    "UserSession",
    "UserSessionState",
    "ValidatedToken",
]
