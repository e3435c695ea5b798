"""Prometheus metrics: the grpc-ecosystem server metrics, store metrics, and the `/metrics` endpoint.

Each `SessionStoreServer` owns one `Metrics` with a private `CollectorRegistry`, so several servers
in one process (tests) never share or collide on series. Label values are method, service, code,
shard, script and realm names only: never a session id, user id, token or note.

Exported names:

- ``grpc_server_started_total{grpc_type,grpc_service,grpc_method}``
- ``grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`` (Go-style codes: ``OK``,
  ``NotFound``, ``InvalidArgument``, ...)
- ``grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`` (histogram, from 100 µs)
- ``grpc_server_msg_received_total`` / ``grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}``
- ``session_store_script_seconds{shard,script}`` (histogram; script is a Lua script name, or
  ``command``/``pipeline`` for plain reads)
- ``session_store_shard_errors_total{shard,kind}`` (kind: connection, timeout, oom, readonly,
  loading, masterdown, busy, unexpected)
- ``session_store_shard_up{shard}`` (1 after a call the shard answered, 0 after it could not)
- ``session_store_sessions{realm,kind}`` (kind: online, offline; refreshed in the background from the
  realm indexes, for realms this node served recently)
- ``session_store_partition_retries_total{reason}`` (reason: moved, frozen; stays 0 until
  resharding exists)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from session_store.storage.policies import PolicyStore
from session_store.storage.sessions import SessionRepository

log = structlog.get_logger(__name__)

HANDLING_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""RPC handling time buckets, seconds: most calls finish well under a millisecond."""

SCRIPT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Shard call time buckets, seconds (a Lua script on a local shard takes tens of microseconds)."""

SESSIONS_REFRESH_SECONDS = 30.0
"""How often `session_store_sessions` is recounted (each recount reads every partition's index)."""

RECENT_REALM_SECONDS = 600.0
"""A realm is counted while this node has used its policy within this many seconds."""

MAX_REALM_SERIES = 20
"""At most this many realms get a `session_store_sessions` series (bounds label cardinality)."""

DOWN_KINDS = frozenset({"connection", "timeout", "loading", "masterdown", "readonly"})
"""Shard call error kinds after which the shard counts as down until a call succeeds."""

GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
"""Python's status code -> the name Go's `codes.Code.String()` gives it (what dashboards expect)."""

_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def go_code_name(code: Any) -> str:
    """The Go-style name of a status code given as a `grpc.StatusCode`, its integer value, or None (OK)."""
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return GO_CODE_NAMES[code]
    for member in grpc.StatusCode:
        if member.value[0] == code:
            return GO_CODE_NAMES[member]
    return "Unknown"


class Metrics:
    """Every series of one server, in its own registry, plus the HTTP endpoint that exposes them."""

    def __init__(self) -> None:
        """Create the series (none is exported with a value until something happens, except retries)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("grpc_server_started", "RPCs started on the server.", _GRPC_LABELS, registry=r)
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            (*_GRPC_LABELS, "grpc_code"),
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server, in seconds.",
            _GRPC_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=r,
        )
        self.received = Counter(
            "grpc_server_msg_received", "Messages received by the server.", _GRPC_LABELS, registry=r
        )
        self.sent = Counter("grpc_server_msg_sent", "Messages sent by the server.", _GRPC_LABELS, registry=r)
        self.script_seconds = Histogram(
            "session_store_script_seconds",
            "Time of one call to a Redis shard (a Lua script, or a plain command/pipeline), in seconds.",
            ("shard", "script"),
            buckets=SCRIPT_BUCKETS,
            registry=r,
        )
        self.shard_errors = Counter(
            "session_store_shard_errors",
            "Shard calls that failed, by kind (connection, timeout, Redis error code, unexpected).",
            ("shard", "kind"),
            registry=r,
        )
        self.shard_up = Gauge(
            "session_store_shard_up",
            "1 if the shard answered its last call (or the startup ping), 0 if it could not.",
            ("shard",),
            registry=r,
        )
        self.sessions = Gauge(
            "session_store_sessions",
            "Live sessions by realm and kind (online/offline), recounted periodically.",
            ("realm", "kind"),
            registry=r,
        )
        self.retries = Counter(
            "session_store_partition_retries",
            "Calls retried because their partition had moved or was frozen by resharding.",
            ("reason",),
            registry=r,
        )
        for reason in ("moved", "frozen"):
            self.retries.labels(reason)
        self._http: tuple[Any, Any] | None = None
        self.port = 0

    # -- store metrics ------------------------------------------------------------------------

    def observe_shard_call(self, shard: str, script: str, seconds: float, kind: str | None) -> None:
        """The `Shard` observer: latency per shard and script, errors by kind, and shard up/down."""
        self.script_seconds.labels(shard, script).observe(seconds)
        if kind is None:
            self.shard_up.labels(shard).set(1)
            return
        self.shard_errors.labels(shard, kind).inc()
        if kind in DOWN_KINDS:
            self.shard_up.labels(shard).set(0)

    def mark_shards_up(self, shards: list[str]) -> None:
        """Record that every shard answered the startup ping."""
        for shard in shards:
            self.shard_up.labels(shard).set(1)

    async def refresh_sessions(self, sessions: SessionRepository, policies: PolicyStore) -> None:
        """Recount live sessions of the realms used recently (exact counts from the realm indexes).

        A realm whose count fails (a shard down) keeps its previous value; realms no longer used
        lose their series.
        """
        realms = policies.recent_realms(RECENT_REALM_SECONDS)[:MAX_REALM_SERIES]
        for realm in realms:
            for kind, offline in (("online", False), ("offline", True)):
                try:
                    count = await sessions.count_sessions(realm, offline=offline)
                except Exception as exc:  # a metrics refresh must never stop the loop
                    log.warning("session_count_failed", realm=realm, error=type(exc).__name__)
                    continue
                self.sessions.labels(realm, kind).set(count)
        keep = set(realms)
        for labels in list(self._session_label_sets()):
            if labels[0] not in keep:
                with contextlib.suppress(KeyError):
                    self.sessions.remove(*labels)

    def _session_label_sets(self) -> list[tuple[str, str]]:
        return [
            (sample.labels["realm"], sample.labels["kind"])
            for family in self.sessions.collect()
            for sample in family.samples
        ]

    async def run_session_refresh(
        self, sessions: SessionRepository, policies: PolicyStore, interval: float = SESSIONS_REFRESH_SECONDS
    ) -> None:
        """Refresh `session_store_sessions` every `interval` seconds until cancelled."""
        while True:
            await self.refresh_sessions(sessions, policies)
            await asyncio.sleep(interval)

    # -- HTTP endpoint ------------------------------------------------------------------------

    def start_http(self, listen: str) -> int:
        """Serve `/metrics` on `host:port` (port 0 picks a free one) in a thread; returns the port.

        Raises:
            OSError: the address could not be bound.
        """
        host, _, port = listen.rpartition(":")
        server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        self._http = (server, thread)
        self.port = int(server.server_port)
        return self.port

    async def stop_http(self) -> None:
        """Stop the endpoint and close its socket (waits for the serving thread to end)."""
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        await asyncio.to_thread(thread.join, 5.0)

    # -- gRPC interceptor ---------------------------------------------------------------------

    def interceptor(self) -> MetricsInterceptor:
        """The server interceptor recording the grpc_server_* series into this registry."""
        return MetricsInterceptor(self)


def _split_method(full_method: str) -> tuple[str, str]:
    """ "/pkg.Service/Method" -> ("pkg.Service", "Method")."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method


class _Call:
    """The labelled series of one method, looked up once per method."""

    def __init__(self, metrics: Metrics, grpc_type: str, service: str, method: str) -> None:
        self._metrics = metrics
        self._labels = (grpc_type, service, method)
        self.started = metrics.started.labels(*self._labels)
        self.handling = metrics.handling.labels(*self._labels)
        self.received = metrics.received.labels(*self._labels)
        self.sent = metrics.sent.labels(*self._labels)
        self._handled: dict[Any, Any] = {}

    def done(self, started: float, code: Any) -> None:
        self.handling.observe(time.perf_counter() - started)
        handled = self._handled.get(code)
        if handled is None:
            handled = self._metrics.handled.labels(*self._labels, go_code_name(code))
            self._handled[code] = handled
        handled.inc()


def _final_code(context: grpc.aio.ServicerContext[Any, Any], failed: bool) -> Any:
    """The status the call ends with: what the servicer set or aborted with, else OK or UNKNOWN."""
    code = context.code()
    if code is None and context.cancelled():
        return grpc.StatusCode.CANCELLED
    if code is None and failed:
        return grpc.StatusCode.UNKNOWN
    return code


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Records started/handled/handling-time/messages for unary and streaming RPCs alike.

    Streaming handlers' iterators are returned to grpc.aio un-awaited (wrapped in async generators),
    which keeps server reflection, a stream-stream service, working.
    """

    def __init__(self, metrics: Metrics) -> None:
        """Record into `metrics`."""
        self._metrics = metrics
        self._calls: dict[str, _Call] = {}

    def _call(self, full_method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> _Call:
        call = self._calls.get(full_method)
        if call is None:
            kind = (
                ("bidi_stream" if handler.response_streaming else "client_stream")
                if handler.request_streaming
                else ("server_stream" if handler.response_streaming else "unary")
            )
            call = _Call(self._metrics, kind, *_split_method(full_method))
            self._calls[full_method] = call
        return call

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Wrap the method's handler; unknown methods (no handler) pass through unrecorded."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return cast("grpc.RpcMethodHandler[_Req, _Resp]", self._wrap(handler_call_details.method, handler))

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> Any:
        call = self._call(full_method, handler)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary_unary(call, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _unary_stream(call, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _stream_unary(call, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _stream_stream(call, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def _counted(call: _Call, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        call.received.inc()
        yield request


def _unary_unary(call: _Call, behavior: Any) -> Any:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call.started.inc()
        call.received.inc()
        started = time.perf_counter()
        failed = True
        try:
            response = await behavior(request, context)
            failed = False
        finally:
            call.done(started, _final_code(context, failed))
        call.sent.inc()
        return response

    return wrapper


def _stream_unary(call: _Call, behavior: Any) -> Any:
    async def wrapper(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call.started.inc()
        started = time.perf_counter()
        failed = True
        try:
            response = await behavior(_counted(call, requests), context)
            failed = False
        finally:
            call.done(started, _final_code(context, failed))
        call.sent.inc()
        return response

    return wrapper


async def _responses(
    call: _Call, result: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    """Pass a streaming handler's responses through, counting them and recording the outcome.

    A handler that writes with `context.write` returns a coroutine instead of an iterator; it is
    awaited here (its messages are not counted).
    """
    started = time.perf_counter()
    failed = True
    try:
        if hasattr(result, "__aiter__"):
            async for response in result:
                call.sent.inc()
                yield response
        else:
            await result
        failed = False
    finally:
        call.done(started, _final_code(context, failed))


# The wrappers must themselves be async generator functions: grpc.aio inspects the behavior to pick
# its streaming path, and treats a plain function returning an async iterator as a sync generator.


def _unary_stream(call: _Call, behavior: Any) -> Any:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        call.started.inc()
        call.received.inc()
        async for response in _responses(call, behavior(request, context), context):
            yield response

    return wrapper


def _stream_stream(call: _Call, behavior: Any) -> Any:
    async def wrapper(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        call.started.inc()
        async for response in _responses(call, behavior(_counted(call, requests), context), context):
            yield response

    return wrapper
