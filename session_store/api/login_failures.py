"""The LoginFailures gRPC servicer (Keycloak's UserLoginFailureProvider + brute-force rules)."""

from __future__ import annotations

from session_store.api import convert
from session_store.api.servicer import Context, rpc
from session_store.storage.login_failures import LoginFailureRepository
from session_store.v1 import login_failures_pb2 as pb
from session_store.v1 import login_failures_pb2_grpc as pb_grpc


class LoginFailuresServicer(pb_grpc.LoginFailuresServicer):
    """Every LoginFailures RPC: validate, call the repository, convert the answer."""

    def __init__(self, failures: LoginFailureRepository) -> None:
        """Serve from this repository."""
        self._failures = failures

    @rpc
    async def RecordLoginFailure(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.RecordLoginFailureRequest, context: Context
    ) -> pb.LoginFailure:
        """See the proto."""
        record = await self._failures.record_login_failure(
            convert.realm(request.realm),
            convert.user_id(request.user_id),
            convert.ip_address(request.ip_address),
        )
        return convert.login_failure_to_proto(record)

    @rpc
    async def GetLoginFailure(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.LoginFailureKey, context: Context
    ) -> pb.LoginFailure:
        """See the proto."""
        record = await self._failures.get_login_failure(
            convert.realm(request.realm), convert.user_id(request.user_id)
        )
        return convert.login_failure_to_proto(record)

    @rpc
    async def ClearLoginFailure(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.LoginFailureKey, context: Context
    ) -> pb.ClearLoginFailureResponse:
        """See the proto: Keycloak's clearFailures resets every counter, which is the record gone."""
        removed = await self._failures.remove_login_failure(
            convert.realm(request.realm), convert.user_id(request.user_id)
        )
        return pb.ClearLoginFailureResponse(removed=removed)

    @rpc
    async def RemoveLoginFailure(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.LoginFailureKey, context: Context
    ) -> pb.ClearLoginFailureResponse:
        """See the proto."""
        removed = await self._failures.remove_login_failure(
            convert.realm(request.realm), convert.user_id(request.user_id)
        )
        return pb.ClearLoginFailureResponse(removed=removed)

    @rpc
    async def RemoveRealmLoginFailures(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.RemoveRealmLoginFailuresRequest, context: Context
    ) -> pb.RemoveRealmLoginFailuresResponse:
        """See the proto."""
        removed = await self._failures.remove_realm_login_failures(convert.realm(request.realm))
        return pb.RemoveRealmLoginFailuresResponse(removed=removed)
