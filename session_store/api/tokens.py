"""The TokenValidation gRPC servicer: check the request, validate, answer the minimal claims."""

from __future__ import annotations

from session_store.api import convert_tokens
from session_store.api.servicer import Context, rpc
from session_store.security.tokens import TokenValidator
from session_store.v1 import tokens_pb2 as pb
from session_store.v1 import tokens_pb2_grpc as pb_grpc


class TokenValidationServicer(pb_grpc.TokenValidationServicer):
    """ValidateToken over a TokenValidator."""

    def __init__(self, validator: TokenValidator) -> None:
        """Validate with this validator."""
        self._validator = validator

    @rpc
    async def ValidateToken(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.ValidateTokenRequest, context: Context
    ) -> pb.ValidatedToken:
        """See the proto."""
        check = convert_tokens.token_check(request)
        validated = await self._validator.validate_token(
            check.realm,
            check.token,
            audience=check.audience,
            kind=check.kind,
            require_client_session=check.require_client_session,
        )
        return convert_tokens.validated_to_proto(validated)
