"""session-store: a clustered session store for Keycloak-like identity servers.

The public surface: the clients, the error tree, the settings and the session value objects.
"""

from __future__ import annotations

from session_store.client import AsyncSessionStoreClient, SessionStoreClient
from session_store.config import Settings
from session_store.errors import (
    InvalidArgumentError,
    LimitExceededError,
    PartitionFrozenError,
    PartitionMovedError,
    PermissionDeniedError,
    PreconditionFailedError,
    SessionExistsError,
    SessionNotFoundError,
    SessionStoreError,
    ShardUnavailableError,
    UnauthenticatedError,
    UnavailableError,
)
from session_store.model.policy import ClientPolicy, RealmPolicy
from session_store.model.session import ClientSession, UserSession, UserSessionState

__all__ = [
    "AsyncSessionStoreClient",
    "ClientPolicy",
    "ClientSession",
    "InvalidArgumentError",
    "LimitExceededError",
    "PartitionFrozenError",
    "PartitionMovedError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "RealmPolicy",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionStoreClient",
    "SessionStoreError",
    "Settings",
    "ShardUnavailableError",
    "UnauthenticatedError",
    "UnavailableError",
    "UserSession",
    "UserSessionState",
]
