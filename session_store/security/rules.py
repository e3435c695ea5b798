"""The authorisation table: for every RPC the server serves, the role it needs and where its realm is.

Roles: read < write < admin. Read-only RPCs need read; RPCs that change sessions, tabs, single-use
objects or login failures need write; removing a whole realm's data (`RemoveSessions`,
`RemoveRealmLoginFailures`), changing a realm's policy (`SetRealmPolicy`) and the cluster-wide RPCs
(`GetEventStats`, ClusterAdmin, the TestClock service) need admin. A cluster-wide RPC names no realm,
so it needs its role on every realm (a grant of ``*``). Health is public (kubelet probes and
health-checking clients carry no credentials; it tells only whether the server serves); reflection
needs an authenticated caller with any grant (it shows only the public contract).

`RULES` is checked on every call by `security.interceptor.AuthInterceptor`; an RPC missing from it is
refused (tests/unit/test_authorisation.py fails when a service of protos/ has an RPC not listed here).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from session_store.security.grants import Role


class Scope(enum.Enum):
    """Where an RPC's realm comes from."""

    REALM = "one realm, from a request field"
    REALMS = "the realms of a repeated request field (empty: every realm)"
    CLUSTER = "no realm: the role on every realm"
    CALLER = "no realm: any authenticated caller whose grant has the role"
    PUBLIC = "no authentication"


@dataclass(frozen=True)
class Rule:
    """What one RPC needs: a role, and where the realm (or realms) it acts on is in the request."""

    role: Role
    scope: Scope
    field: str = ""
    """For REALM and REALMS: the request field, dotted for a nested message (`policy.realm`)."""

    def realms(self, request: object) -> tuple[str | None, ...]:
        """The realms the call acts on; None stands for every realm (cluster-wide).

        Raises:
            AttributeError: the request has no such field (a table error; the coverage test catches it).
        """
        if self.scope is Scope.REALM:
            return (str(_field(request, self.field)),)
        if self.scope is Scope.REALMS:
            realms = tuple(str(r) for r in cast("Iterable[object]", _field(request, self.field)))
            return realms or (None,)
        if self.scope is Scope.CLUSTER:
            return (None,)
        return ()

    @property
    def needs_request(self) -> bool:
        """Whether the realm is read from the request (so a client-streaming RPC cannot have this rule)."""
        return self.scope in (Scope.REALM, Scope.REALMS)


def _field(message: object, path: str) -> object:
    for name in path.split("."):
        message = getattr(message, name)
    return message


READ = Rule(Role.READ, Scope.REALM, "realm")
WRITE = Rule(Role.WRITE, Scope.REALM, "realm")
ADMIN = Rule(Role.ADMIN, Scope.REALM, "realm")
CLUSTER_ADMIN = Rule(Role.ADMIN, Scope.CLUSTER)
PUBLIC = Rule(Role.READ, Scope.PUBLIC)

TABLE: Mapping[str, Mapping[str, Rule]] = {
    "session_store.v1.SessionStore": {
        "CreateUserSession": WRITE,
        "GetUserSession": READ,
        "TouchUserSession": WRITE,
        "UpdateUserSession": WRITE,
        "RemoveUserSession": WRITE,
        "AttachClientSession": WRITE,
        "GetClientSession": READ,
        "UpdateClientSession": WRITE,
        "DetachClientSession": WRITE,
        "ListUserSessions": READ,
        "RemoveUserSessions": WRITE,
        "CountSessions": READ,
        "GetClientSessionStats": READ,
        "FindUserSessionByBrokerSessionId": READ,
        "FindUserSessionsByBrokerUserId": READ,
        "CreateOfflineSession": WRITE,
        "UseRefreshToken": WRITE,
        "RemoveSessions": ADMIN,
        "SetRealmPolicy": Rule(Role.ADMIN, Scope.REALM, "policy.realm"),
        "GetRealmPolicy": READ,
    },
    "session_store.v1.AuthenticationSessions": {
        "GetOrCreateRootAuthenticationSession": WRITE,
        "GetRootAuthenticationSession": READ,
        "RemoveRootAuthenticationSession": WRITE,
        "RestartRootAuthenticationSession": WRITE,
        "CreateAuthenticationSession": WRITE,
        "GetAuthenticationSession": READ,
        "UpdateAuthenticationSession": WRITE,
        "RemoveAuthenticationSession": WRITE,
    },
    "session_store.v1.SingleUseObjects": {
        "PutSingleUseObject": WRITE,
        "PutSingleUseObjectIfAbsent": WRITE,
        "GetSingleUseObject": READ,
        "TakeSingleUseObject": WRITE,
        "ReplaceSingleUseObject": WRITE,
        "ContainsSingleUseObject": READ,
    },
    "session_store.v1.LoginFailures": {
        "RecordLoginFailure": WRITE,
        "GetLoginFailure": READ,
        "ClearLoginFailure": WRITE,
        "RemoveLoginFailure": WRITE,
        "RemoveRealmLoginFailures": ADMIN,
    },
    "session_store.v1.SessionEvents": {
        "Watch": Rule(Role.READ, Scope.REALMS, "realms"),
        "GetEventStats": CLUSTER_ADMIN,
    },
    "session_store.v1.TokenValidation": {
        "ValidateToken": READ,
    },
    "session_store.v1.ClusterAdmin": {
        "GetTopology": CLUSTER_ADMIN,
        "AddShard": CLUSTER_ADMIN,
        "RemoveShard": CLUSTER_ADMIN,
        "ResumeMove": CLUSTER_ADMIN,
    },
    "session_store.v1.TestClock": {
        "AdvanceClock": CLUSTER_ADMIN,
        "GetClock": CLUSTER_ADMIN,
    },
    "grpc.health.v1.Health": {
        "Check": PUBLIC,
        "Watch": PUBLIC,
    },
    "grpc.reflection.v1alpha.ServerReflection": {
        "ServerReflectionInfo": Rule(Role.READ, Scope.CALLER),
    },
}
"""Service full name -> method name -> rule."""

RULES: Mapping[str, Rule] = {
    f"/{service}/{method}": rule for service, methods in TABLE.items() for method, rule in methods.items()
}
"""gRPC method path (`/package.Service/Method`, as grpc.HandlerCallDetails.method) -> rule."""
