"""The AuthenticationSessions gRPC servicer: validate, call the repository, convert the answer."""

from __future__ import annotations

from session_store.api import convert, convert_auth
from session_store.api.servicer import Context, rpc
from session_store.storage.auth_sessions import AuthenticationSessionRepository
from session_store.v1 import authentication_sessions_pb2 as pb
from session_store.v1 import authentication_sessions_pb2_grpc as pb_grpc


class AuthenticationSessionsServicer(pb_grpc.AuthenticationSessionsServicer):
    """Every AuthenticationSessions RPC (Keycloak's AuthenticationSessionProvider, §1.4)."""

    def __init__(self, auth_sessions: AuthenticationSessionRepository) -> None:
        """Serve from this repository."""
        self._auth = auth_sessions

    @rpc
    async def GetOrCreateRootAuthenticationSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.GetOrCreateRootAuthenticationSessionRequest, context: Context
    ) -> pb.RootAuthenticationSession:
        """See the proto."""
        realm = convert.realm(request.realm)
        root_id = convert_auth.root_id(request.root_id) if request.root_id else None
        root = await self._auth.get_or_create_root_authentication_session(realm, root_id)
        return convert_auth.root_to_proto(root)

    @rpc
    async def GetRootAuthenticationSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.GetRootAuthenticationSessionRequest, context: Context
    ) -> pb.RootAuthenticationSession:
        """See the proto."""
        root = await self._auth.get_root_authentication_session(
            convert.realm(request.realm), convert_auth.root_id(request.root_id)
        )
        return convert_auth.root_to_proto(root)

    @rpc
    async def RemoveRootAuthenticationSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.RemoveRootAuthenticationSessionRequest, context: Context
    ) -> pb.RemoveRootAuthenticationSessionResponse:
        """See the proto."""
        removed = await self._auth.remove_root_authentication_session(
            convert.realm(request.realm), convert_auth.root_id(request.root_id)
        )
        return pb.RemoveRootAuthenticationSessionResponse(removed=removed)

    @rpc
    async def RestartRootAuthenticationSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.RestartRootAuthenticationSessionRequest, context: Context
    ) -> pb.RootAuthenticationSession:
        """See the proto."""
        root = await self._auth.restart_root_authentication_session(
            convert.realm(request.realm), convert_auth.root_id(request.root_id)
        )
        return convert_auth.root_to_proto(root)

    @rpc
    async def CreateAuthenticationSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.CreateAuthenticationSessionRequest, context: Context
    ) -> pb.AuthenticationSession:
        """See the proto."""
        tab = await self._auth.create_authentication_session(
            convert.realm(request.realm),
            convert_auth.root_id(request.root_id),
            convert.client_id(request.client_id),
        )
        return convert_auth.tab_to_proto(tab)

    @rpc
    async def GetAuthenticationSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.GetAuthenticationSessionRequest, context: Context
    ) -> pb.AuthenticationSession:
        """See the proto."""
        tab = await self._auth.get_authentication_session(
            convert.realm(request.realm),
            convert_auth.root_id(request.root_id),
            convert_auth.tab_id(request.tab_id),
            convert.client_id(request.client_id),
        )
        return convert_auth.tab_to_proto(tab)

    @rpc
    async def UpdateAuthenticationSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.UpdateAuthenticationSessionRequest, context: Context
    ) -> pb.AuthenticationSession:
        """See the proto."""
        realm = convert.realm(request.realm)
        root_id = convert_auth.root_id(request.root_id)
        tab_id = convert_auth.tab_id(request.tab_id)
        client_id = convert.client_id(request.client_id)
        update = convert_auth.update_from_proto(request)
        tab = await self._auth.update_authentication_session(realm, root_id, tab_id, client_id, update)
        return convert_auth.tab_to_proto(tab)

    @rpc
    async def RemoveAuthenticationSession(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.RemoveAuthenticationSessionRequest, context: Context
    ) -> pb.RemoveAuthenticationSessionResponse:
        """See the proto."""
        result = await self._auth.remove_authentication_session(
            convert.realm(request.realm),
            convert_auth.root_id(request.root_id),
            convert_auth.tab_id(request.tab_id),
        )
        return pb.RemoveAuthenticationSessionResponse(
            removed=result.removed, root_removed=result.root_removed
        )
