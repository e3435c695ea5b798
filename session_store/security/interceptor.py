"""The one check of every call: who is calling (authentication), and may it do this here (authorisation).

`AuthInterceptor` is a grpc.aio server interceptor installed when caller authentication is on
(`AuthSettings.enforced`). For each call it finds the RPC's rule in `security.rules.RULES`,
authenticates the caller with `Authenticator` and checks the caller's grant against the rule and the
realm(s) of the request, before the servicer runs. Failures end the call the way servicers end theirs
(`api._status.to_status`): UNAUTHENTICATED for missing or invalid credentials, PERMISSION_DENIED
for a caller without the role in the realm, each with its google.rpc.ErrorInfo reason, so the client
raises `UnauthenticatedError` / `PermissionDeniedError`. Each refusal is logged once (the caller's
identity, the method, why; never a token).

How a caller is identified, first match wins:

1. an ``authorization: Bearer <jwt>`` header (only one; refused when no JWT keys are configured):
   ``jwt:<sub>``, see `security.bearer`;
2. a peer on a unix-socket listener: ``unix:<SESSION_STORE_AUTH_UNIX_IDENTITY>``, the pod's own
   process (the socket is mode 0600), admin of every realm unless the callers file grants it less;
3. with mutual TLS, the verified client certificate: ``tls:<name>``, where the name is the first of
   its URI SANs, then DNS SANs, then subject CN that the callers file lists (else the first of them,
   which then has no grant);
4. nothing else authenticates: UNAUTHENTICATED.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

import grpc
import structlog

from session_store.api._status import to_status
from session_store.config import AuthSettings
from session_store.errors import PermissionDeniedError, SessionStoreError, UnauthenticatedError
from session_store.security.bearer import BearerVerifier
from session_store.security.grants import ADMIN_EVERYWHERE, Caller, Grant
from session_store.security.rules import RULES, Rule, Scope

log = structlog.get_logger(__name__)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Context = grpc.aio.ServicerContext[Any, Any]


def certificate_names(auth_context: Mapping[str, Iterable[bytes]]) -> list[str]:
    """The names a verified client certificate carries: URI SANs, DNS SANs, then the subject CN."""
    names: list[str] = []
    for prop in ("peer_uri", "peer_dns", "x509_common_name"):
        for value in auth_context.get(prop, ()):
            name = value.decode("utf-8", errors="replace")
            if name and name not in names:
                names.append(name)
    return names


class Authenticator:
    """Turns a call's credentials (bearer token, unix peer, client certificate) into a Caller."""

    def __init__(
        self, settings: AuthSettings, callers: Mapping[str, Grant], bearer: BearerVerifier | None
    ) -> None:
        """Authenticate with these settings, the callers file's grants and (if configured) JWTs."""
        self._callers = callers
        self._bearer = bearer
        self._mutual_tls = settings.mutual_tls
        self._unix_identity = f"unix:{settings.unix_identity}"

    async def authenticate(self, context: Context) -> Caller:
        """The caller of this call.

        Raises:
            UnauthenticatedError: no credentials, or credentials that do not prove an identity.
        """
        tokens = [value for key, value in (context.invocation_metadata() or ()) if key == "authorization"]
        if len(tokens) > 1:
            raise UnauthenticatedError("send one authorization header, not several")
        if tokens:
            if self._bearer is None:
                raise UnauthenticatedError("this server accepts no bearer tokens")
            scheme, _, token = str(tokens[0]).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise UnauthenticatedError("authorization must be `Bearer <token>`")
            return await self._bearer.authenticate(token.strip())
        if context.peer().startswith("unix:"):
            return Caller(self._unix_identity, self._callers.get(self._unix_identity, ADMIN_EVERYWHERE))
        if self._mutual_tls:
            names = [f"tls:{name}" for name in certificate_names(context.auth_context())]
            if names:
                identity = next((name for name in names if name in self._callers), names[0])
                return Caller(identity, self._callers.get(identity))
        raise UnauthenticatedError("no credentials: present a client certificate or a bearer token")


def authorise(rule: Rule, caller: Caller, request: object) -> None:
    """Check `caller`'s grant against an RPC's rule and the realm(s) of its request.

    Raises:
        PermissionDeniedError: the caller has no grant, a lower role, or not every realm the call
            acts on (a cluster-wide call needs a grant of every realm).
    """
    grant = caller.grant
    if grant is None:
        raise PermissionDeniedError(f"caller {caller.identity} has no grant")
    role = rule.role.name.lower()
    if grant.role < rule.role:
        raise PermissionDeniedError(f"caller {caller.identity} needs the {role} role")
    for realm in rule.realms(request):
        if not grant.allows(rule.role, realm):
            where = "every realm" if realm is None else f"realm {realm!r}"
            raise PermissionDeniedError(f"caller {caller.identity} may not {role} in {where}")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and authorises every call before its servicer runs (see the module docstring).

    Streaming handlers' iterators are passed through un-awaited, as grpc.aio needs (awaiting them
    breaks reflection).
    """

    def __init__(self, authenticator: Authenticator, rules: Mapping[str, Rule] = RULES) -> None:
        """Check calls with this authenticator against these rules."""
        self._authenticator = authenticator
        self._rules = rules

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Wrap the method's handler with the check; public and unknown methods pass through."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        rule = self._rules.get(method)
        if handler is None or (rule is not None and rule.scope is Scope.PUBLIC):
            return handler
        return cast("grpc.RpcMethodHandler[_Req, _Resp]", self._wrap(method, rule, handler))

    async def _admit(self, method: str, rule: Rule | None, request: object | None, context: Context) -> None:
        """Authenticate and authorise one call, or end it with UNAUTHENTICATED / PERMISSION_DENIED."""
        error: SessionStoreError
        try:
            if rule is None or (request is None and rule.needs_request):
                # Fail closed: an RPC the table does not know, or whose realm cannot be read up front.
                log.error("rpc_not_in_authorisation_table", method=method)
                raise PermissionDeniedError(f"{method} is not in the authorisation table")
            caller = await self._authenticator.authenticate(context)
            authorise(rule, caller, request)
        except UnauthenticatedError as exc:
            log.warning("rpc_unauthenticated", method=method, peer=context.peer(), error=exc.message)
            error = exc
        except PermissionDeniedError as exc:
            log.warning("rpc_denied", method=method, error=exc.message)
            error = exc
        else:
            structlog.contextvars.bind_contextvars(caller=caller.identity)  # each RPC is its own task
            return
        await context.abort_with_status(to_status(error))

    def _wrap(self, method: str, rule: Rule | None, handler: grpc.RpcMethodHandler[Any, Any]) -> Any:
        admit = self._admit
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary_unary: Any = handler.unary_unary  # grpc.aio's async behaviours; the stubs type sync ones

            async def checked_unary_unary(request: Any, context: Context) -> Any:
                await admit(method, rule, request, context)
                return await unary_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(checked_unary_unary, **serializers)
        if handler.unary_stream is not None:
            unary_stream: Any = handler.unary_stream

            async def checked_unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                await admit(method, rule, request, context)
                async for response in _responses(unary_stream(request, context)):
                    yield response

            return grpc.unary_stream_rpc_method_handler(checked_unary_stream, **serializers)
        if handler.stream_unary is not None:
            stream_unary: Any = handler.stream_unary

            async def checked_stream_unary(requests: Any, context: Context) -> Any:
                await admit(method, rule, None, context)
                return await stream_unary(requests, context)

            return grpc.stream_unary_rpc_method_handler(checked_stream_unary, **serializers)
        stream_stream: Any = handler.stream_stream

        async def checked_stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
            await admit(method, rule, None, context)
            async for response in _responses(stream_stream(requests, context)):
                yield response

        return grpc.stream_stream_rpc_method_handler(checked_stream_stream, **serializers)


async def _responses(result: Any) -> AsyncIterator[Any]:
    """A streaming handler's responses; a handler that writes with `context.write` returns a coroutine
    instead of an iterator, which is awaited here."""
    if not hasattr(result, "__aiter__"):
        await result
        return
    # Closed with the outer stream, so the handler's own clean-up runs now, not at garbage collection.
    async with contextlib.aclosing(result) if hasattr(result, "aclose") else contextlib.nullcontext(result):
        async for response in result:
            yield response
